"""Distillation and MLM losses: pure functions of arrays.

The formulas are those of the original DistilBERT trainer, Hugging Face
`examples/research_projects/distillation/distiller.py` (`Distiller.step`), with one change of
form: each loss returns `(loss_sum, denominator)` instead of a mean. The train step adds the sums
over micro-batches and divides once by the denominator of the whole batch, so gradient
accumulation gives exactly the gradient of one big batch.

Where the original selects rows with `torch.masked_select(x, mask)`, these functions take
`weights` over the token positions instead (1.0 selects, 0.0 drops; general non-negative weights
scale a position's contribution). Inputs may have any leading shape, e.g. `[batch, length, vocab]`
or already gathered `[n, vocab]`; `weights` has that leading shape. Everything is computed in
float32 whatever the input dtype, so bfloat16 activations lose nothing in the reduction.
"""
from __future__ import annotations

import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp

LossAndDenominator = Tuple[jax.Array, jax.Array]

# torch.nn.CosineEmbeddingLoss adds this to each squared norm (ATen `Loss.cpp`, EPSILON), which
# differs from torch.nn.functional.cosine_similarity's `clamp_min(|x|^2 |y|^2, eps^2)`.
COSINE_EMBEDDING_EPSILON = 1e-12


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x).astype(jnp.float32)


def _check_pair(student: jax.Array, teacher: jax.Array) -> None:
  # Broadcasting would silently pair a [..., 1] array with every column of the other.
  if student.shape != teacher.shape:
    raise ValueError(f"student shape {student.shape} != teacher shape {teacher.shape}")


def _weighted_sum(per_position: jax.Array, weights: jax.Array) -> LossAndDenominator:
  """`sum(weights * per_position)` and `sum(weights)`, both float32 scalars."""
  weights = _f32(weights)
  return jnp.sum(weights * per_position), jnp.sum(weights)


def kl_div_loss(student_logits: jax.Array, teacher_logits: jax.Array, weights: jax.Array,
                temperature: float) -> LossAndDenominator:
  """Soft-target loss `loss_ce` of distiller.py: KL(teacher || student) at temperature T, times T^2.

  The original computes `KLDivLoss(reduction="batchmean")(log_softmax(s / T), softmax(t / T))
  * T**2` on the selected rows; "batchmean" divides the summed KL by the number of rows. The T^2
  factor keeps the gradient scale independent of T (Hinton et al., 2015, section 2).

  Args:
    student_logits: [..., vocab].
    teacher_logits: [..., vocab]; the caller applies `jax.lax.stop_gradient` if it wants to.
    weights: [...] non-negative weight per row (the original selects masked positions in MLM
      mode, real tokens otherwise).
    temperature: softmax temperature T (the original's `--temperature`, default 2.0).

  Returns:
    (sum over rows of weight * T^2 * KL, sum of weights), float32 scalars.
  """
  return _weighted_sum(softmax_kl_rows(student_logits, teacher_logits, temperature), weights)


def softmax_kl_rows(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 1.0
                    ) -> jax.Array:
  """[..., n] x 2 -> [...] float32: T^2 KL(softmax(t / T) || softmax(s / T)) of each row.

  A teacher logit at float32's minimum (a masked entry) has probability 0 and adds nothing,
  whatever the student's logit there; the attention losses (attention_losses.py) mask so.
  """
  _check_pair(student_logits, teacher_logits)
  return _kl_rows(_f32(student_logits), _f32(teacher_logits), float(temperature))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _kl_rows(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float) -> jax.Array:
  """[..., vocab] float32 x 2 -> [...]: T^2 KL(softmax(t / T) || softmax(s / T)) per row.

  The gradient is written out (d/ds = T (softmax(s / T) - softmax(t / T)), and the teacher's for
  callers that do not stop it) so that the backward pass reads the two saved [..., vocab]
  log-probability arrays once; autodiff of the forward formula made XLA:CPU take several more
  passes over them (0.16 s of a 1.4 s vocabulary head at 1,024 x 30,522: BENCHMARKS.md).
  """
  return _kl_rows_fwd(student_logits, teacher_logits, temperature)[0]


def _kl_rows_fwd(student_logits, teacher_logits, temperature):
  student_log_probs = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  teacher_log_probs = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  teacher_probs = jnp.exp(teacher_log_probs)
  # 0 * log 0 = 0, as torch.kl_div's xlogy: a teacher probability that underflows adds nothing.
  pointwise = jnp.where(teacher_probs > 0, teacher_probs * (teacher_log_probs - student_log_probs), 0.0)
  per_row = jnp.sum(pointwise, axis=-1) * (temperature ** 2)
  return per_row, (student_log_probs, teacher_log_probs)


def _kl_rows_bwd(temperature, residuals, cotangent):
  student_log_probs, teacher_log_probs = residuals
  teacher_probs = jnp.exp(teacher_log_probs)
  scale = cotangent[..., None] * temperature  # T^2 from the loss, 1/T from the softmax input
  d_student = scale * (jnp.exp(student_log_probs) - teacher_probs)
  log_ratio = jnp.where(teacher_probs > 0, teacher_log_probs - student_log_probs, 0.0)
  mean_log_ratio = jnp.sum(teacher_probs * log_ratio, axis=-1, keepdims=True)
  d_teacher = scale * teacher_probs * (log_ratio - mean_log_ratio)
  return d_student, d_teacher


_kl_rows.defvjp(_kl_rows_fwd, _kl_rows_bwd)


def masked_lm_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array
                   ) -> LossAndDenominator:
  """Hard-target loss `loss_mlm` of distiller.py: cross-entropy on the positions chosen for MLM.

  The original uses `CrossEntropyLoss(ignore_index=-100)` with labels -100 off the chosen
  positions; here `labels` may hold any id there and `weights` does the selecting.

  Args:
    logits: [..., vocab] student MLM logits.
    labels: [...] integer token ids to predict (the uncorrupted input ids).
    weights: [...] 1.0 at positions chosen for prediction (`MaskedBatch.mlm_weights`).

  Returns:
    (sum of weight * -log p(label), sum of weights), float32 scalars.
  """
  log_probs = jax.nn.log_softmax(_f32(logits), axis=-1)
  # Clipping makes an ignore-index label (-100) at a zero-weight position gather a finite value
  # rather than a NaN that 0 * NaN would carry into the sum.
  labels = jnp.clip(jnp.asarray(labels).astype(jnp.int32), 0, logits.shape[-1] - 1)
  label_log_probs = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
  return _weighted_sum(-label_log_probs, weights)


def cosine_embedding_loss(student_hidden: jax.Array, teacher_hidden: jax.Array,
                          weights: jax.Array) -> LossAndDenominator:
  """Hidden-state alignment `loss_cos` of distiller.py: 1 - cos(student, teacher) per position.

  The original applies `CosineEmbeddingLoss(reduction="mean")` with target 1 to the last hidden
  layers of student and teacher at real tokens (attention mask). torch computes
  cos = x.y / sqrt((|x|^2 + 1e-12) (|y|^2 + 1e-12)); we do the same, so a zero vector has cos 0.

  Args:
    student_hidden: [..., hidden].
    teacher_hidden: [..., hidden].
    weights: [...] non-negative weight per position.

  Returns:
    (sum of weight * (1 - cos), sum of weights), float32 scalars.
  """
  _check_pair(student_hidden, teacher_hidden)
  student_hidden, teacher_hidden = _f32(student_hidden), _f32(teacher_hidden)
  dot = jnp.sum(student_hidden * teacher_hidden, axis=-1)
  student_sq = jnp.sum(student_hidden * student_hidden, axis=-1) + COSINE_EMBEDDING_EPSILON
  teacher_sq = jnp.sum(teacher_hidden * teacher_hidden, axis=-1) + COSINE_EMBEDDING_EPSILON
  cos = dot / jnp.sqrt(student_sq * teacher_sq)
  return _weighted_sum(1.0 - cos, weights)


def mse_logits_loss(student_logits: jax.Array, teacher_logits: jax.Array, weights: jax.Array
                    ) -> LossAndDenominator:
  """Logit-matching loss `loss_mse` of distiller.py.

  The original: `MSELoss(reduction="sum")(s_slct, t_slct) / s_slct.size(0)`, i.e. squared
  differences summed over the vocabulary and divided by the number of selected rows (not by
  rows * vocab).

  Args:
    student_logits: [..., vocab].
    teacher_logits: [..., vocab].
    weights: [...] non-negative weight per row.

  Returns:
    (sum of weight * sum over vocab of (s - t)^2, sum of weights), float32 scalars.
  """
  _check_pair(student_logits, teacher_logits)
  per_row = jnp.sum(jnp.square(_f32(student_logits) - _f32(teacher_logits)), axis=-1)
  return _weighted_sum(per_row, weights)


def hidden_mse_loss(student_hidden: jax.Array, teacher_hidden: jax.Array, weights: jax.Array
                    ) -> LossAndDenominator:
  """Mean squared error between a student and a teacher hidden layer (TinyBERT, Jiao et al.,
  2020, eq. 7), over the selected positions.

  Not in distiller.py. Student and teacher widths must agree; a wider teacher needs a learned
  projection of the student first (TinyBERT's W_h), which the job trains (jobs/task_loss.py).

  Args:
    student_hidden: [..., hidden].
    teacher_hidden: [..., hidden].
    weights: [...] non-negative weight per position.

  Returns:
    (sum of weight * sum over hidden of (s - t)^2, sum of weights * hidden), float32 scalars;
    their ratio is `torch.nn.MSELoss(reduction="mean")` on the selected rows.
  """
  _check_pair(student_hidden, teacher_hidden)
  per_position = jnp.sum(jnp.square(_f32(student_hidden) - _f32(teacher_hidden)), axis=-1)
  loss_sum, weight_sum = _weighted_sum(per_position, weights)
  return loss_sum, weight_sum * student_hidden.shape[-1]


def hidden_layer_map(pairs: Sequence[Sequence[int]], student_layers: Sequence[int]) -> tuple:
  """The (student, teacher) hidden-state pairs of the hidden-state loss; index 0 is the
  embeddings' output, index i the output of layer i.

  Args:
    pairs: the config's explicit pairs (loss.hidden_layer_map); they win when given.
    student_layers: otherwise, for each student layer i, the 0-based teacher layer it was
      initialised from; student layer i is then matched to that teacher layer.
  """
  if pairs:
    return tuple(tuple(int(i) for i in p) for p in pairs)
  return tuple((i + 1, t + 1) for i, t in enumerate(student_layers))


def hidden_states_loss(student_hidden: Sequence[jax.Array], teacher_hidden: Sequence[jax.Array],
                       layer_map: Sequence[tuple], weights: jax.Array) -> jax.Array:
  """Sum over layer_map of hidden_mse_loss's loss sum: student_hidden and teacher_hidden are the
  models' hidden_states ([batch, length, hidden] each), weights [batch, length]."""
  return sum(hidden_mse_loss(student_hidden[s], teacher_hidden[t], weights)[0] for s, t in layer_map)
