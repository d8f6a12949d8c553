"""The fine-tuning job's losses, as train.Job's step functions: one class for classification,
regression and SQuAD.

Each loss is a sum over the batch; train divides it by its denominator (the batch's examples;
for loss_hidden its real tokens times hidden size times mapped layers; for loss_attention its
real (query, key) pairs times heads times mapped layers; for loss_relation its real tokens times
relation heads times layer pairs):
  loss_task: cross-entropy on the labels (squared error for regression; for SQuAD the mean of
    the start and end cross-entropies, as transformers' question-answering heads)
  loss_kd: T^2 KL(teacher || student) of the softmax at temperature T (regression: squared error
    to the teacher's prediction; SQuAD: the mean of the start and end KLs)
  loss_hidden: MSE between chosen student and teacher hidden states over real tokens (TinyBERT);
    when the widths differ, the student's pass through a learned projection first (TinyBERT's
    W_h: one [student width, teacher width] kernel and bias for all layers, trained with the
    student and dropped from the export; train.Job.extra_params)
  loss_attention: MSE of the pre-softmax attention scores of the layers loss_hidden pairs
    (TinyBERT, Jiao et al., 2020, eq. 3), over real queries and keys
  loss_relation: KL(teacher || student) of the Q-Q, K-K and V-V self-attention relations over
    loss.relation_heads relation heads (MiniLMv2, Wang et al., 2021), at loss.relation_layers
  loss_attention_kl, loss_value_relation: MiniLM's (Wang et al., 2020) KL(teacher || student) of
    the attention distributions and of the value relations, head by head, at loss.relation_layers
    (denominator: real tokens times heads times layer pairs)
The three layer losses read attention_losses.py and losses.py; the models give their inputs.
A batch with teacher_logits [batch, outputs] (augmented data, tasks/augmentation.py) takes the
teacher's outputs from there, and the teacher is not run; its task_weight [batch] (0 for the
augmented rows, which have no labels) weighs loss_task, whose denominator is then its sum.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any

import jax
import jax.numpy as jnp

from distilbert_jax import attention_losses, losses
from distilbert_jax.jobs import checks
from distilbert_jax.tasks.batches import model_kwargs

LOSS_NAMES = ("task", "kd", "hidden", "attention", "relation", "attention_kl", "value_relation")
# The losses that read the layers' queries, keys and values (output_qkv).
QKV_LOSSES = ("attention", "relation", "attention_kl", "value_relation")


def hidden_layer_map(config, student, teacher) -> tuple:
  """(student, teacher) hidden-state index pairs of loss_hidden: config.loss.hidden_layer_map, or
  each student layer against the teacher layer (config.model.layers) it was copied from. The
  attention loss pairs the same layers."""
  l = config.loss
  if l.hidden_layer_map or (l.alpha_hidden <= 0 and l.alpha_attention <= 0) or teacher is None:
    return losses.hidden_layer_map(config.loss.hidden_layer_map, ())
  layers = tuple(config.model.layers) or tuple(range(student.config.num_hidden_layers))
  return losses.hidden_layer_map(config.loss.hidden_layer_map, layers)


def build_loss(config, kind: str, student, teacher) -> "TaskLoss":
  """The losses of a job of `kind` ("classification", "regression" or "squad"); a layer loss
  that does not fit the two models is a ConfigError."""
  layer_map = hidden_layer_map(config, student, teacher)
  if teacher is None:
    return TaskLoss(config, student, teacher, kind, layer_map)
  projection = config.loss.alpha_hidden > 0 and student.config.hidden_size != teacher.config.hidden_size
  layer_pairs = checks.checked_layer_pairs(config.loss, student.config, teacher.config, layer_map, projection)
  return TaskLoss(config, student, teacher, kind, layer_map, *layer_pairs, hidden_projection=projection)


def init_hidden_projection(student_config, teacher_config, seed: int) -> dict:
  """TinyBERT's W_h at step 0, as its fit_dense (BERT's initialisation): kernel float32 [student
  width, teacher width] ~ N(0, initializer_range^2), bias float32 [teacher width] zeros."""
  ds, dt = student_config.hidden_size, teacher_config.hidden_size
  kernel = student_config.initializer_range * jax.random.normal(jax.random.PRNGKey(seed), (ds, dt), jnp.float32)
  return {"kernel": kernel, "bias": jnp.zeros((dt,), jnp.float32)}


@dataclasses.dataclass
class TaskLoss:
  """The job's step functions (see train.Job) for classification, regression and SQuAD."""
  config: Any
  student: Any
  teacher: Any
  kind: str  # "classification", "regression" or "squad"
  layer_map: tuple  # (student, teacher) hidden-state indices of loss_hidden
  attention_pairs: tuple = ()  # (student, teacher) 0-based layers of loss_attention
  relation_pairs: tuple = ()  # (student, teacher) 0-based layers of loss_relation
  relation_heads: int = 0
  # The widths differ and loss_hidden projects the student's hidden states: the trained tree is
  # {"model": the student's parameters, "hidden_projection": init_hidden_projection(...)}.
  hidden_projection: bool = False

  def denominators(self, batch):
    rows = jnp.asarray(batch["input_ids"].shape[0], jnp.float32)
    real = jnp.sum(batch["attention_mask"].astype(jnp.float32))
    width = (self.teacher if self.teacher is not None else self.student).config.hidden_size  # W_h projects to it
    hidden = real * width * max(len(self.layer_map), 1)
    attention = (attention_losses.query_key_pairs(batch["attention_mask"]) * self.student.config.num_attention_heads
                 * max(len(self.attention_pairs), 1))
    relation = real * self.relation_heads * max(len(self.relation_pairs), 1)
    minilm = real * self.student.config.num_attention_heads * max(len(self.relation_pairs), 1)
    task = jnp.sum(batch["task_weight"]) if "task_weight" in batch else rows
    return {"task": task, "kd": rows, "hidden": hidden, "attention": attention, "relation": relation,
            "attention_kl": minilm, "value_relation": minilm}

  def loss_sums(self, params, teacher_params, batch, dropout_rng):
    l = self.config.loss
    projection = params["hidden_projection"] if self.hidden_projection else None
    params = params["model"] if self.hidden_projection else params
    has_teacher = self.teacher is not None
    need_hidden = l.alpha_hidden > 0 and has_teacher
    need_qkv = has_teacher and any(l.get(f"alpha_{n}", 0.0) > 0 for n in QKV_LOSSES)
    outputs = dict(output_hidden_states=need_hidden, output_qkv=need_qkv)
    student_out = self.student.apply({"params": params}, batch["input_ids"], deterministic=False,
                                     rngs={"dropout": dropout_rng}, **outputs, **model_kwargs(self.student, batch))
    teacher_out = None
    if "teacher_logits" in batch:  # computed once, before training
      teacher_out = types.SimpleNamespace(logits=batch["teacher_logits"])
    elif has_teacher:
      teacher_out = jax.lax.stop_gradient(self.teacher.apply(
          {"params": teacher_params}, batch["input_ids"], deterministic=True, **outputs,
          **model_kwargs(self.teacher, batch)))
    sums = {}
    ones = jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
    task_weight = batch.get("task_weight", ones)
    if self.kind == "squad":
      start, end = _masked_span_logits(student_out, batch["attention_mask"])
      sums["task"] = 0.5 * (_cross_entropy(start, batch["start_positions"]) + _cross_entropy(end, batch["end_positions"]))
      if teacher_out is not None and l.alpha_kd > 0:
        t_start, t_end = _masked_span_logits(teacher_out, batch["attention_mask"])
        sums["kd"] = 0.5 * (losses.kl_div_loss(start, t_start, ones, l.temperature)[0]
                            + losses.kl_div_loss(end, t_end, ones, l.temperature)[0])
    elif self.kind == "regression":
      prediction = student_out.logits[:, 0].astype(jnp.float32)
      sums["task"] = jnp.sum(task_weight * (prediction - batch["labels"]) ** 2)
      if teacher_out is not None and l.alpha_kd > 0:
        sums["kd"] = jnp.sum((prediction - teacher_out.logits[:, 0].astype(jnp.float32)) ** 2)
    else:
      logits = student_out.logits.astype(jnp.float32)
      sums["task"] = _cross_entropy(logits, batch["labels"], task_weight)
      if teacher_out is not None and l.alpha_kd > 0:
        sums["kd"] = losses.kl_div_loss(logits, teacher_out.logits, ones, l.temperature)[0]
    if has_teacher and "teacher_logits" not in batch:  # cached outputs carry no layers
      sums.update(self.layer_sums(student_out, teacher_out, batch["attention_mask"], projection))
    return sums

  def layer_sums(self, student_out, teacher_out, attention_mask, projection=None) -> dict:
    """The sums of the losses between the models' layers (hidden, attention, relation) that
    config.loss weighs above 0; attention_mask [batch, length]; projection: W_h's kernel and
    bias, applied to the student's hidden states (None: the widths agree)."""
    l, sums = self.config.loss, {}
    if l.alpha_hidden > 0:
      student_hidden = student_out.hidden_states
      if projection is not None:
        student_hidden = tuple(jnp.dot(h.astype(jnp.float32), projection["kernel"]) + projection["bias"]
                               for h in student_hidden)
      sums["hidden"] = losses.hidden_states_loss(student_hidden, teacher_out.hidden_states,
                                                 self.layer_map, attention_mask.astype(jnp.float32))
    student_qkv, teacher_qkv = student_out.attention_qkv, teacher_out.attention_qkv
    if l.alpha_attention > 0:
      sums["attention"] = sum(attention_losses.attention_score_loss(
          *student_qkv[s][:2], *teacher_qkv[t][:2], attention_mask)[0] for s, t in self.attention_pairs)
    if l.alpha_relation > 0:
      sums["relation"] = sum(attention_losses.relations_loss(
          student_qkv[s], teacher_qkv[t], attention_mask, self.relation_heads)[0] for s, t in self.relation_pairs)
    sums.update(attention_losses.minilm_losses(l, student_qkv, teacher_qkv, attention_mask, self.relation_pairs))
    return sums


def _masked_span_logits(out, attention_mask):
  """start and end logits [batch, length] float32, padding positions at -1e9 (never an answer)."""
  keep = attention_mask.astype(bool)
  return tuple(jnp.where(keep, x.astype(jnp.float32), -1e9) for x in (out.start_logits, out.end_logits))


def _cross_entropy(logits, labels, weights=None):
  """Summed cross-entropy: logits [batch, classes], labels [batch] int, weights [batch] (None: 1)."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]
  return -jnp.sum(picked if weights is None else weights * picked)
