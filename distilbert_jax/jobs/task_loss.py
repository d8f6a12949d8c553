"""The fine-tuning job's losses, as train.Job's step functions: one class for classification,
regression and SQuAD.

Each loss is a sum over the batch; train divides it by its denominator (the batch's examples;
for loss_hidden its real tokens times hidden size times mapped layers):
  loss_task: cross-entropy on the labels (squared error for regression; for SQuAD the mean of
    the start and end cross-entropies, as transformers' question-answering heads)
  loss_kd: T^2 KL(teacher || student) of the softmax at temperature T (regression: squared error
    to the teacher's prediction; SQuAD: the mean of the start and end KLs)
  loss_hidden: MSE between chosen student and teacher hidden states over real tokens (TinyBERT)
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

from distilbert_jax import losses
from distilbert_jax.tasks.batches import model_kwargs

LOSS_NAMES = ("task", "kd", "hidden")


def hidden_layer_map(config, student, teacher) -> tuple:
  """(student, teacher) hidden-state index pairs of loss_hidden: config.loss.hidden_layer_map, or
  each student layer against the teacher layer (config.model.layers) it was copied from."""
  if config.loss.hidden_layer_map or config.loss.alpha_hidden <= 0 or teacher is None:
    return losses.hidden_layer_map(config.loss.hidden_layer_map, ())
  layers = tuple(config.model.layers) or tuple(range(student.config.num_hidden_layers))
  return losses.hidden_layer_map(config.loss.hidden_layer_map, layers)


def build_loss(config, kind: str, student, teacher) -> "TaskLoss":
  """The losses of a job of `kind` ("classification", "regression" or "squad")."""
  return TaskLoss(config, student, teacher, kind, hidden_layer_map(config, student, teacher))


@dataclasses.dataclass
class TaskLoss:
  """The job's step functions (see train.Job) for classification, regression and SQuAD."""
  config: Any
  student: Any
  teacher: Any
  kind: str  # "classification", "regression" or "squad"
  layer_map: tuple

  def denominators(self, batch):
    rows = jnp.asarray(batch["input_ids"].shape[0], jnp.float32)
    real = jnp.sum(batch["attention_mask"].astype(jnp.float32))
    hidden = real * self.student.config.hidden_size * max(len(self.layer_map), 1)
    task = jnp.sum(batch["task_weight"]) if "task_weight" in batch else rows
    return {"task": task, "kd": rows, "hidden": hidden}

  def loss_sums(self, params, teacher_params, batch, dropout_rng):
    l = self.config.loss
    need_hidden = l.alpha_hidden > 0 and self.teacher is not None
    student_out = self.student.apply({"params": params}, batch["input_ids"], deterministic=False,
                                     rngs={"dropout": dropout_rng}, output_hidden_states=need_hidden,
                                     **model_kwargs(self.student, batch))
    teacher_out = None
    if "teacher_logits" in batch:  # computed once, before training
      teacher_out = types.SimpleNamespace(logits=batch["teacher_logits"])
    elif self.teacher is not None:
      teacher_out = jax.lax.stop_gradient(self.teacher.apply(
          {"params": teacher_params}, batch["input_ids"], deterministic=True, output_hidden_states=need_hidden,
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
    if need_hidden:
      real = batch["attention_mask"].astype(jnp.float32)
      sums["hidden"] = losses.hidden_states_loss(student_out.hidden_states, teacher_out.hidden_states,
                                                 self.layer_map, real)
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
