"""Attention and relation distillation losses: pure functions of one student and one teacher layer.

  attention_distribution_loss  MiniLM (Wang et al., 2020, eq. 6): KL of the attention probabilities
  value_relation_loss          MiniLM (eq. 7-8): KL of softmax(V V^T / sqrt(d_head))
  self_attention_relation_loss MiniLMv2 (Wang et al., 2021, eq. 3-6): KL of softmax(X X^T / sqrt(d_r))
                               over R relation heads, X the queries, keys or values
  relations_loss               MiniLMv2's sum of the Q-Q, K-K and V-V relations
  minilm_losses                MiniLM's two losses as a config's `loss` section weighs them
  attention_score_loss         TinyBERT (Jiao et al., 2020, eq. 3): MSE of the pre-softmax scores

Inputs are what the models return with `output_qkv=True` (ModelOutput.attention_qkv): per layer
the query, key and value projections, [batch, length, heads, head_dim], before any dropout; the
probabilities and relations are computed here, so attention dropout in the student never enters
the loss. `attention_mask` is [batch, length], 1 at real tokens: padding keys are excluded from
every softmax (as the models exclude them) and padding queries from every sum.

As in losses.py, each function returns `(loss_sum, denominator)`, float32 scalars whose ratio is the
paper's mean (over heads and real query positions; for TinyBERT over heads and real query-key
pairs), so that the step can add sums over micro-batches and divide once. The teacher's inputs
pass through `jax.lax.stop_gradient`: only the student learns. All math is float32 at the highest
matmul precision (a TPU's default float32 matmul rounds its inputs to bfloat16).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax.losses import LossAndDenominator, softmax_kl_rows

Array = jax.Array
MASKED_SCORE = float(np.finfo(np.float32).min)  # as models/attention.py masks padding keys


def _f32(x: Array) -> Array:
  return jnp.asarray(x).astype(jnp.float32)


def _check_batch(student: Array, teacher: Array, attention_mask: Array) -> None:
  # Batch and length must agree; heads and widths may differ where the loss allows it.
  if student.shape[:2] != teacher.shape[:2] or student.shape[:2] != attention_mask.shape:
    raise ValueError(f"student {student.shape} and teacher {teacher.shape} [batch, length, ...] do not match the "
                     f"attention mask {attention_mask.shape}")


def relation_heads(x: Array, num_relation_heads: int) -> Array:
  """[batch, length, heads, head_dim] -> [batch, length, R, heads * head_dim / R]: the heads
  concatenated (as the projection wrote them) and split again into R relation heads (MiniLMv2,
  section 3.1), so teacher and student may differ in head count and width."""
  batch, length, heads, head_dim = x.shape
  width = heads * head_dim
  if num_relation_heads <= 0 or width % num_relation_heads:
    raise ValueError(f"{num_relation_heads} relation heads do not divide the width {width}")
  return x.reshape(batch, length, num_relation_heads, width // num_relation_heads)


def _scores(x: Array, y: Array) -> Array:
  """x, y: [batch, length, heads, d] -> x y^T / sqrt(d): [batch, heads, length, length], float32."""
  product = jnp.einsum("bqhd,bkhd->bhqk", _f32(x), _f32(y), precision=jax.lax.Precision.HIGHEST)
  return product / np.sqrt(x.shape[-1])


def _masked_keys(scores: Array, attention_mask: Array) -> Array:
  return jnp.where(attention_mask.astype(bool)[:, None, None, :], scores, MASKED_SCORE)


def _relation_kl(student_x, student_y, teacher_x, teacher_y, attention_mask) -> LossAndDenominator:
  """sum over batch, heads and real queries of KL(softmax(t_x t_y^T / sqrt(d_t)) || softmax(s_x
  s_y^T / sqrt(d_s))) over the real keys; inputs [batch, length, heads, d], equal head counts.
  Returns (that sum, real queries * heads)."""
  teacher_x, teacher_y = jax.lax.stop_gradient(teacher_x), jax.lax.stop_gradient(teacher_y)
  student_scores = _masked_keys(_scores(student_x, student_y), attention_mask)
  teacher_scores = _masked_keys(_scores(teacher_x, teacher_y), attention_mask)
  per_row = softmax_kl_rows(student_scores, teacher_scores)  # [batch, heads, length]
  queries = _f32(attention_mask)[:, None, :]
  heads = student_x.shape[2]
  return jnp.sum(per_row * queries), jnp.sum(queries) * heads


def _check_heads(student: Array, teacher: Array, loss: str) -> None:
  if student.shape[2] != teacher.shape[2]:
    raise ValueError(f"{loss} needs equal head counts: the student has {student.shape[2]}, the teacher "
                     f"{teacher.shape[2]}")


def attention_distribution_loss(student_query: Array, student_key: Array, teacher_query: Array,
                                teacher_key: Array, attention_mask: Array) -> LossAndDenominator:
  """MiniLM's self-attention distribution transfer (Wang et al., 2020, eq. 6):
  L_AT = 1 / (A_h |x|) sum_a sum_t KL(A^T_{a,t} || A^S_{a,t}), A_a = softmax(Q_a K_a^T / sqrt(d_k)).

  Args:
    student_query, student_key: [batch, length, heads, head_dim_s], one student layer.
    teacher_query, teacher_key: [batch, length, heads, head_dim_t], one teacher layer; the same
      number of heads (the paper's requirement), any head width.
    attention_mask: [batch, length], 1 at real tokens.

  Returns:
    (sum over batch, heads and real queries t of KL over real keys, real queries * heads).
  """
  _check_batch(student_query, teacher_query, attention_mask)
  _check_heads(student_query, teacher_query, "the attention distribution loss")
  return _relation_kl(student_query, student_key, teacher_query, teacher_key, attention_mask)


def value_relation_loss(student_value: Array, teacher_value: Array, attention_mask: Array
                        ) -> LossAndDenominator:
  """MiniLM's value-relation transfer (Wang et al., 2020, eq. 7-8):
  L_VR = 1 / (A_h |x|) sum_a sum_t KL(VR^T_{a,t} || VR^S_{a,t}), VR_a = softmax(V_a V_a^T / sqrt(d_k)).

  Args:
    student_value: [batch, length, heads, head_dim_s]; teacher_value: [batch, length, heads,
      head_dim_t] (equal head counts); attention_mask: [batch, length].

  Returns:
    (sum over batch, heads and real queries of KL over real keys, real queries * heads).
  """
  _check_batch(student_value, teacher_value, attention_mask)
  _check_heads(student_value, teacher_value, "the value relation loss")
  return _relation_kl(student_value, student_value, teacher_value, teacher_value, attention_mask)


def self_attention_relation_loss(student: Array, teacher: Array, attention_mask: Array,
                                 num_relation_heads: int) -> LossAndDenominator:
  """One of MiniLMv2's self-attention relations (Wang et al., 2021, eq. 3-5): with X the queries
  (or keys, or values) of all heads concatenated and split into R relation heads of width
  d_r = width / R, R_i = softmax(X_i X_i^T / sqrt(d_r)) and
  L = 1 / (R |x|) sum_i sum_t KL(R^T_{i,t} || R^S_{i,t}).

  Args:
    student: [batch, length, heads_s, head_dim_s]; teacher: [batch, length, heads_t, head_dim_t].
    attention_mask: [batch, length], 1 at real tokens.
    num_relation_heads: R, which must divide both widths (heads * head_dim).

  Returns:
    (sum over batch, relation heads and real queries of KL over real keys, real queries * R).
  """
  _check_batch(student, teacher, attention_mask)
  student, teacher = relation_heads(student, num_relation_heads), relation_heads(teacher, num_relation_heads)
  return _relation_kl(student, student, teacher, teacher, attention_mask)


def relations_loss(student_qkv: tuple, teacher_qkv: tuple, attention_mask: Array,
                   num_relation_heads: int) -> LossAndDenominator:
  """MiniLMv2's loss of one layer pair (eq. 6, every weight 1): the Q-Q, K-K and V-V relation
  losses added. student_qkv, teacher_qkv: (query, key, value) of one layer each, as
  ModelOutput.attention_qkv holds them. Returns (the three sums added, real queries * R), so
  the ratio is the sum of the three means."""
  sums = [self_attention_relation_loss(s, t, attention_mask, num_relation_heads)[0]
          for s, t in zip(student_qkv, teacher_qkv)]
  return sum(sums), jnp.sum(_f32(attention_mask)) * num_relation_heads


def minilm_losses(loss, student_qkv, teacher_qkv, attention_mask: Array, layer_pairs) -> dict:
  """The loss sums of MiniLM's transfer that the config section `loss` weighs above 0:
  {"attention_kl": sum of attention_distribution_loss, "value_relation": sum of
  value_relation_loss} over layer_pairs ((student, teacher) 0-based layers); *_qkv are the models'
  attention_qkv (per layer (query, key, value), [batch, length, heads, head_dim])."""
  sums = {}
  if loss.get("alpha_attention_kl", 0.0) > 0:
    sums["attention_kl"] = sum(attention_distribution_loss(
        *student_qkv[s][:2], *teacher_qkv[t][:2], attention_mask)[0] for s, t in layer_pairs)
  if loss.get("alpha_value_relation", 0.0) > 0:
    sums["value_relation"] = sum(value_relation_loss(
        student_qkv[s][2], teacher_qkv[t][2], attention_mask)[0] for s, t in layer_pairs)
  return sums


def query_key_pairs(attention_mask: Array) -> Array:
  """sum over the batch of (real tokens)^2: the real (query, key) pairs of one head, float32."""
  return jnp.sum(jnp.square(jnp.sum(_f32(attention_mask), axis=-1)))


def attention_score_loss(student_query: Array, student_key: Array, teacher_query: Array,
                         teacher_key: Array, attention_mask: Array) -> LossAndDenominator:
  """TinyBERT's attention loss (Jiao et al., 2020, eq. 3): L_attn = 1/h sum_i MSE(A^S_i, A^T_i)
  with A_i = Q_i K_i^T / sqrt(d_k), the scores before the softmax, over real queries and real
  keys (TinyBERT's code zeroes the masked scores instead; here they are left out).

  Args:
    student_query, student_key: [batch, length, heads, head_dim_s].
    teacher_query, teacher_key: [batch, length, heads, head_dim_t], the same number of heads.
    attention_mask: [batch, length], 1 at real tokens.

  Returns:
    (sum over batch, heads and real (query, key) pairs of (A^S - A^T)^2,
     heads * query_key_pairs(attention_mask)).
  """
  _check_batch(student_query, teacher_query, attention_mask)
  _check_heads(student_query, teacher_query, "TinyBERT's attention loss")
  teacher_query, teacher_key = jax.lax.stop_gradient(teacher_query), jax.lax.stop_gradient(teacher_key)
  difference = _scores(student_query, student_key) - _scores(teacher_query, teacher_key)
  real = _f32(attention_mask)
  pairs = real[:, None, :, None] * real[:, None, None, :]  # [batch, 1, query, key]
  heads = student_query.shape[2]
  return jnp.sum(jnp.square(difference) * pairs), query_key_pairs(attention_mask) * heads


def attention_layer_pairs(hidden_pairs) -> tuple:
  """The (student layer, teacher layer) pairs, 0-based, whose attention TinyBERT matches, from the
  hidden-state pairs of the hidden-state loss (index i = the output of layer i, 0 = the
  embeddings): the attention of layer i is that of hidden state i, so pairs past the embeddings
  map to (s - 1, t - 1) and pairs with the embeddings have none."""
  return tuple((s - 1, t - 1) for s, t in hidden_pairs if s > 0 and t > 0)


def relation_layer_pairs(pairs, student_layers: int, teacher_layers: int) -> tuple:
  """The (student layer, teacher layer) pairs, 0-based, of the MiniLMv2 relation loss: `pairs`
  when given, otherwise the last layer of each (MiniLMv2, section 3.1, for base-size teachers)."""
  if pairs:
    return tuple(tuple(int(i) for i in p) for p in pairs)
  return ((student_layers - 1, teacher_layers - 1),)
