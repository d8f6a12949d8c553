"""The augmented training set of a task distillation run (config.augment; TinyBERT, Jiao et al.
2020): the original examples, their variants and new pairs (tasks/augmentation.py), each with
the teacher's outputs, computed once and cached in WORKDIR/augment.

  is_augmenting(config)                     whether config.augment asks for augmentation
  check_augment(config, data)               its one-line config errors
  teacher_in_step(config)                   whether the train step runs the teacher
  augmented_train(config, data, tokenizer, workdir) -> the training arrays

The arrays are those of glue.encode (originals first, then the augmented rows) plus
task_weight: float32 [n], 1 where loss_task applies (the originals, in phase "joint") and 0
elsewhere (augmented rows carry the label 0, which their weight 0 leaves unused), and, when
only the logits are distilled, teacher_logits: float32 [n, outputs] (regression: [n, 1]).
jobs/task_loss.py then takes the teacher's outputs from the batch and the step never runs the
teacher. A layer loss (TinyBERT's hidden states and attention scores, MiniLM's relations)
needs the teacher's layers, too large to cache (80,000 rows of 128 tokens hold 16 GB of float32
hidden states per layer at width 384): with one, the step runs the teacher on each batch, as it does
without augmentation, and nothing of the teacher is cached.
"""
from __future__ import annotations

import numpy as np
from absl import logging

from distilbert_jax import errors, storage
from distilbert_jax.jobs import checks
from distilbert_jax.tasks import augmentation, glue
from distilbert_jax.tasks.task_data import EvalSet, TaskData, is_squad

PHASES = ("joint", "kd")
# The losses between the models' layers (jobs/task_loss.py), which need the teacher in the step.
LAYER_LOSSES = ("hidden", "attention", "relation", "attention_kl", "value_relation")


def is_augmenting(config) -> bool:
  a = config.get("augment")
  return a is not None and (a.num_variants > 0 or a.num_pairs > 0)


def check_augment(config, data: bool = True) -> None:
  """The augment section's fields; with `data`, the MLM directory too."""
  a = config.get("augment")
  if a is None:
    return
  for name in ("num_variants", "num_pairs"):
    if a[name] < 0:
      raise errors.ConfigError(f"augment.{name}={a[name]} must be >= 0")
  if not is_augmenting(config):
    return
  if is_squad(config.task):
    raise errors.ConfigError("augment: data augmentation is for sequence-classification tasks, not SQuAD; "
                             "set --config.augment.num_variants=0")
  for name in ("top_k", "words_per_row"):
    if a[name] < 1:
      raise errors.ConfigError(f"augment.{name}={a[name]} must be >= 1")
  if not 0 < a.replace_prob <= 1:
    raise errors.ConfigError(f"augment.replace_prob={a.replace_prob} must be in (0, 1]")
  if a.mlm_max_length < 3:
    raise errors.ConfigError(f"augment.mlm_max_length={a.mlm_max_length} must be >= 3 ([CLS], a word, [SEP])")
  if a.phase not in PHASES:
    raise errors.ConfigError(f"augment.phase={a.phase!r} must be one of {', '.join(PHASES)}")
  if not config.teacher.path:
    raise errors.ConfigError("augment: teacher.path is empty; the augmented examples are labelled by a teacher "
                             "fine-tuned on the task")
  if config.loss.alpha_kd <= 0:
    raise errors.ConfigError("augment: loss.alpha_kd is 0; the augmented examples carry only loss_kd")
  columns = len(config.data.text_columns) if config.task == "custom" else len(glue.get_task(config.task).text_columns
                                                                               or ("sentence",))
  if a.num_pairs > 0 and columns < 2:
    raise errors.ConfigError(f"augment.num_pairs={a.num_pairs}: task {config.task!r} has one text per example; "
                             "new pairs need a pair task")
  if data:
    if not a.mlm_path:
      raise errors.ConfigError("augment.mlm_path is empty: name a model with a masked-LM head")
    checks.check_directory(a.mlm_path, "augment.mlm_path")


def teacher_in_step(config) -> bool:
  """Whether the train step runs the teacher (given teacher.path): always without augmentation,
  and with it only for a layer loss; otherwise the batches carry its cached logits."""
  return not is_augmenting(config) or any(config.loss.get(f"alpha_{n}", 0.0) > 0 for n in LAYER_LOSSES)


def augmented_train(config, data: TaskData, tokenizer, workdir, teacher_outputs) -> dict:
  """data.train followed by the augmented examples, with task_weight and (without a layer loss)
  teacher_logits (see the module docstring). teacher_outputs(arrays) -> float32 [n, outputs]:
  the teacher on the arrays, called only when the cache has no outputs for them."""
  a = config.augment
  excluded = augmentation.texts_of([s.examples for s in [*data.evals, *data.tests]])
  cache_dir = storage.path(workdir) / "augment"
  mlm_path = checks.check_directory(a.mlm_path, "augment.mlm_path")
  examples, key = augmentation.augmented_examples(data.train_examples, a.to_dict(), mlm_path, cache_dir, excluded)
  extra = glue.encode(examples, tokenizer, config.data.max_length)
  n, m = len(data.train["input_ids"]), len(examples)
  labels = data.train["labels"]
  extra["labels"] = np.zeros(m, labels.dtype)
  train = {k: np.concatenate([v, extra[k]]) for k, v in data.train.items()}
  weight = 1.0 if a.phase == "joint" else 0.0
  train["task_weight"] = np.concatenate([np.full(n, weight, np.float32), np.zeros(m, np.float32)])
  if teacher_in_step(config):  # a layer loss: the step runs the teacher, its logits included
    logging.info("augmented training set: %d originals, %d augmented examples (%s); the teacher runs in the step",
                 n, m, cache_dir)
    return train
  teacher_dir = checks.check_directory(config.teacher.path, "teacher.path")
  tokenizer_dir = checks.check_directory(config.data.tokenizer_dir or config.model.path, "model.path")
  outputs_key = augmentation.array_key(key, augmentation.directory_fingerprint(teacher_dir), config.teacher.dtype,
                                       augmentation.tokenizer_fingerprint(tokenizer_dir), config.data.max_length)
  train["teacher_logits"] = augmentation.cached_array(
      cache_dir / f"teacher-{outputs_key}.npy",
      lambda: teacher_outputs(EvalSet("train", train, None))).astype(np.float32)
  logging.info("augmented training set: %d originals, %d augmented examples (%s)", n, m, cache_dir)
  return train
