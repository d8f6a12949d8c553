"""Fine-tuning and task distillation on GLUE, your own labelled tables and SQuAD: a job of the training core (train/).

  distilbert-jax finetune --config configs/glue.py --config.task=rte --config.model.path=MODEL_DIR \
      --config.data.dir=GLUE_DIR --workdir runs/rte
  distilbert-jax finetune --config configs/squad.py --config.model.path=MODEL_DIR \
      --config.data.train=train-v1.1.json --config.data.eval=dev-v1.1.json --workdir runs/squad

A job is built in parts, which the compile command and the benchmarks can take one by one:
  build_models / build_abstract_models   the student (and a fine-tuned teacher, for task distillation)
  build_data                             the task's data, its training batches and the step count
  task_loss.build_loss                   the losses (task_loss.py: loss_task, loss_kd, loss_hidden, ...)
make_job and make_abstract_job compose them through `_job`, which adds what the train step needs
(the FLOPs, the batch shapes, the export).

Evaluation (tasks/evaluator.py) runs every `train.eval_every` steps (0: once an epoch) over every
example (the last batch padded and masked, never dropped); the parameters with the best main
metric of the task are kept in WORKDIR/best and exported to WORKDIR/export with their
predictions and eval_results.json.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging as pylogging
import math
import os
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from distilbert_jax import convert, errors, models, storage, train
from distilbert_jax.data import input_pipeline
from distilbert_jax.hardware import flops
from distilbert_jax.jobs import augmented, checks
from distilbert_jax.jobs.task_loss import LOSS_NAMES, build_loss, init_hidden_projection
from distilbert_jax.tasks import glue
from distilbert_jax.tasks.batches import ArrayBatches
from distilbert_jax.tasks.evaluator import Evaluator
from distilbert_jax.tasks.task_data import TaskData, head_for, is_squad, load_task_data, read_custom_table, \
    tokenizer_for


# ===================================================================================== config checks
def check_config(config: ml_collections.ConfigDict, data: bool = True) -> None:
  """Every check that needs no model and no text; without `data` (an ahead-of-time compile)
  none of the data files."""
  d, m, l = config.data, config.model, config.loss
  if not is_squad(config.task) and config.task != "custom":
    glue.get_task(config.task)  # unknown task names are listed in its error
  if not m.path:
    raise errors.ConfigError("model.path is empty: name a Hugging Face or distilbert_jax model directory")
  checks.check_directory(m.path, "model.path")
  checks.check_directory(config.teacher.path, "teacher.path")
  for path in filter(None, (m.path, config.teacher.path)):
    input_pipeline.check_lengths(d, convert.read_model_config(path).max_position_embeddings, path)
  teacher_losses = (l.alpha_kd, l.alpha_hidden, l.alpha_attention, l.alpha_relation, l.alpha_attention_kl,
                    l.alpha_value_relation)
  if not config.teacher.path and any(a > 0 for a in teacher_losses) and l.alpha_task <= 0:
    raise errors.ConfigError("loss.alpha_task is 0 and there is no teacher.path: nothing to learn from")
  checks.check_layer_loss_fields(l)
  checks.check_schedule(config)
  if config.optim.learning_rate < 0:
    raise errors.ConfigError(f"optim.learning_rate={config.optim.learning_rate} must be >= 0 (0: by the model's width)")
  augmented.check_augment(config, data)
  if not data:
    return
  if d.source not in ("dir", "tfds"):
    raise errors.ConfigError(f"data.source must be 'dir' or 'tfds', got {d.source!r}")
  files = []
  if is_squad(config.task) or config.task == "custom":
    if d.source == "dir" or config.task == "custom":
      if not d.train:
        raise errors.ConfigError("data.train is empty: name the training file")
      files = [f for f in (d.train, d.eval, d.get("test", "")) if f]
  elif d.source == "dir":
    if not d.dir:
      raise errors.ConfigError("data.dir is empty: name the GLUE directory (GLUE_DIR/CoLA/train.tsv, ...)")
    if not os.path.isdir(d.dir):
      raise errors.ConfigError(f"{d.dir}: no such directory (data.dir)")
  for f in files:
    if not os.path.isfile(f):
      raise errors.ConfigError(f"{f}: no such file")
  if not 0 <= d.holdout_fraction < 1:
    raise errors.ConfigError(f"data.holdout_fraction={d.holdout_fraction} must be in [0, 1)")
  room = d.max_length - d.max_query_length - 3  # [CLS] and two [SEP]
  if is_squad(config.task) and not 0 < d.doc_stride < room:
    raise errors.ConfigError(f"data.doc_stride={d.doc_stride} must be below data.max_length={d.max_length} - "
                             f"data.max_query_length={d.max_query_length} - 3 = {room}, or a window may hold no "
                             f"new context: lower --config.data.doc_stride or --config.data.max_query_length")


# ===================================================================================== models
def task_outputs(config, task=None) -> tuple[str, int, Optional[tuple]]:
  """(kind, outputs of the task head, label names): "squad" (start and end logits),
  "regression" (one output) or "classification" (one per class). task: the glue.Task the data
  was read with; without it, from the config alone (a custom table without data.label_names is
  read for its classes)."""
  if is_squad(config.task):
    return "squad", 2, None
  if task is None:
    d = config.data
    if config.task == "custom":
      label_names = None if d.regression else (tuple(d.label_names) or read_custom_table(config, d.train).label_names)
      task = glue.make_task("custom", label_names)
    else:
      task = glue.get_task(config.task)
  return ("regression" if task.is_regression else "classification"), task.num_outputs, task.label_names


def build_models(config, label_names, num_outputs: int, resuming: bool = False) -> tuple:
  """(student, its float32 params, teacher, its params): the teacher None without teacher.path."""
  head = head_for(config.task)
  student, params = build_student(config, head, label_names, num_outputs, config.train.seed, resuming=resuming)
  # Augmented data carries the teacher's logits (jobs/augmented.py): no teacher in the step,
  # unless a layer loss needs its layers.
  teacher, teacher_params = None, None
  if augmented.teacher_in_step(config):
    teacher, teacher_params = build_teacher(config, head, num_outputs)
  return student, params, teacher, teacher_params


def build_abstract_models(config, label_names, num_outputs: int, platform: str) -> tuple:
  """build_models' result for a compile on `platform` from the config.json files of model.path
  and teacher.path alone: the parameters are jax.ShapeDtypeStructs."""
  m, t = config.model, config.teacher
  head = head_for(config.task)
  id2label = tuple(label_names) if label_names else tuple(f"LABEL_{i}" for i in range(num_outputs))
  if m.layers:
    base_config = convert.read_model_config(m.path)
    student_config, _ = convert.student_config_of(base_config, layers=tuple(m.layers),
                                                  student_type=m.type or base_config.model_type, id2label=id2label,
                                                  **train.compile_fields(m, platform))
  else:
    student_config = convert.read_model_config(m.path, id2label=id2label, **train.compile_fields(m, platform))
  student = models.get_model(student_config, head, dtype=models.resolve_dtype(m.dtype, platform))
  teacher, teacher_params = None, None
  if t.path and augmented.teacher_in_step(config):
    teacher_config = convert.read_model_config(t.path, **train.compile_fields(t, platform))
    teacher = models.get_model(teacher_config, head, dtype=models.resolve_dtype(t.dtype, platform))
    teacher_params = train.abstract_params(teacher, teacher.dtype)
  return student, train.abstract_params(student, jnp.float32), teacher, teacher_params


def build_student(config, head: str, label_names, num_outputs: int, seed: int, resuming: bool = False):
  """(model, float32 params) of the model to fine-tune, from config.model.path: all of it, or
  only `config.model.layers` of its layers (a student initialised from a teacher, as
  convert.student_from_teacher; the task head comes along when the model has one that fits). A
  head that does not fit the task (another number of labels) is an error unless
  config.model.reinit_head, which initialises it afresh with a warning. resuming: the trained
  parameters come from a checkpoint, so convert's warnings about new heads would mislead."""
  if resuming:
    with _quiet_logger(convert.log):
      return build_student(config, head, label_names, num_outputs, seed)
  m = config.model
  id2label = tuple(label_names) if label_names else tuple(f"LABEL_{i}" for i in range(num_outputs))
  dtype = models.resolve_dtype(m.dtype)
  rng = jax.random.PRNGKey(seed)
  if m.layers:
    try:  # a model fine-tuned on this task already: its head comes along with the chosen layers
      teacher_head = head
      base, base_params = convert.load_pretrained(m.path, head=head, id2label=id2label)
    except convert.ConversionError:  # no such head, or one of another size: a new one
      teacher_head = "base"
      base, base_params = convert.load_pretrained(m.path, head="base")
    student_config, params = convert.student_from_teacher(
        base.config, base_params, teacher_head=teacher_head, layers=tuple(m.layers),
        student_type=m.type or base.config.model_type, student_head=head, rng=rng, id2label=id2label,
        **train.compile_fields(m))
    return models.get_model(student_config, head, dtype=dtype), _float32(params)
  try:
    model, params = convert.load_pretrained(m.path, head=head, dtype=dtype, init_missing_heads=True, rng=rng,
                                            id2label=id2label, **train.compile_fields(m))
    return model, _float32(params)
  except convert.ConversionError as e:
    if not (m.reinit_head and "shape mismatch" in str(e)):
      if "shape mismatch" in str(e):
        raise errors.ConfigError(f"{e}; the checkpoint's head does not fit this task: set "
                                 f"--config.model.reinit_head=true to initialise a new one") from e
      raise
  logging.warning("%s: the head does not fit %d outputs; it is initialised afresh (model.reinit_head)", m.path,
                  num_outputs)
  print(f"distilbert-jax: warning: {m.path}: the task head is initialised afresh (model.reinit_head)")
  base, base_params = convert.load_pretrained(m.path, head="base", **train.compile_fields(m))
  model = models.get_model(dataclasses.replace(base.config, id2label=id2label), head, dtype=dtype)
  params = train.init_params(model, seed)
  body = "bert" if base.config.model_type == "bert" else "distilbert"
  params[body] = {k: base_params[k] if k in base_params else v for k, v in params[body].items()}
  return model, _float32(params)


@contextlib.contextmanager
def _quiet_logger(logger):
  """`logger`'s warnings left out while the block runs."""
  level = logger.level
  logger.setLevel(pylogging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def has_checkpoints(workdir: Path) -> bool:
  """Whether a run in `workdir` resumes (orbax names each checkpoint by its step)."""
  directory = storage.path(workdir) / "checkpoints"
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def _float32(params):
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


def build_teacher(config, head: str, num_outputs: int):
  t = config.teacher
  if not t.path:
    return None, None
  model, params = convert.load_pretrained(t.path, head=head, dtype=models.resolve_dtype(t.dtype),
                                          **train.compile_fields(t))
  if head == "sequence_classification" and model.config.num_labels != num_outputs:
    raise errors.ConfigError(f"{t.path}: the teacher has {model.config.num_labels} outputs but the task needs "
                             f"{num_outputs} (fine-tune a teacher on this task first)")
  return model, jax.tree.map(lambda x: jnp.asarray(x, model.dtype), params)


# Fine-tuning learning rates by the encoder's width (optim.learning_rate 0). Measured: all-MiniLM-L6-v2
# (384 wide) as a GLUE teacher, BENCHMARKS.md "Fine-tuning retention"; BERT-base (768): run_glue's.
NARROW_WIDTH, NARROW_LEARNING_RATE, WIDE_LEARNING_RATE = 512, 1e-4, 2e-5


def default_learning_rate(model_config) -> float:
  """1e-4 for encoders narrower than 512 (MiniLM-size, which learn little in a few epochs at
  BERT-base's rate), 2e-5 from 512 up (BERT-base and DistilBERT-base, as run_glue.py)."""
  return NARROW_LEARNING_RATE if model_config.hidden_size < NARROW_WIDTH else WIDE_LEARNING_RATE


# ===================================================================================== data
def build_data(config, workdir=None) -> tuple[TaskData, ArrayBatches, int]:
  """(the task's data, this process's training batches, the number of optimizer steps:
  train.num_steps, or train.num_epochs of batches). With config.augment, the batches also hold
  the augmented examples, cached in workdir/augment (jobs/augmented.py)."""
  t = config.train
  tokenizer = tokenizer_for(config)
  data = load_task_data(config, tokenizer)
  train_arrays = data.train
  if augmented.is_augmenting(config):
    def teacher_outputs(eval_set):
      teacher, teacher_params = build_teacher(config, head_for(config.task), task_outputs(config, data.task)[1])
      return Evaluator(teacher, data, config).outputs(teacher_params, eval_set)[0]
    train_arrays = augmented.augmented_train(config, data, tokenizer, workdir, teacher_outputs)
  iterator = ArrayBatches(train_arrays, global_batch_size=t.batch_size, bucket_lengths=config.data.bucket_lengths,
                          seed=config.data.shuffle_seed, process_index=jax.process_index(),
                          process_count=jax.process_count())
  num_steps = t.num_steps if t.num_steps > 0 else int(math.ceil(t.num_epochs * iterator.batches_per_epoch))
  return data, iterator, num_steps


# ===================================================================================== job
def make_job(config: ml_collections.ConfigDict, workdir: Path) -> train.Job:
  """Data, models, losses and evaluation of a fine-tuning (or task distillation) run."""
  checks.check_processes(config)
  data, iterator, num_steps = build_data(config, workdir)
  kind, num_outputs, label_names = task_outputs(config, data.task)
  student, params, teacher, teacher_params = build_models(config, label_names, num_outputs,
                                                          resuming=has_checkpoints(workdir))
  evaluator = Evaluator(student, data, config) if data.evals else None
  last_eval = {}

  def evaluate(params):
    metrics, predictions = evaluator.evaluate(params)
    last_eval.update(predictions=predictions)
    return metrics

  def after_export(export_dir, params):
    if evaluator is None:
      return {}
    metrics, predictions = evaluator.evaluate(params)
    evaluator.write(storage.path(workdir), metrics, predictions)
    evaluator.write_test_predictions(params, storage.path(workdir))
    return {f"final_eval_{k}": v for k, v in metrics.items()}

  job = _job(config, kind, student, params, teacher, teacher_params, iterator, num_steps)
  return dataclasses.replace(
      job, tokenizer_dir=config.data.tokenizer_dir or config.model.path, evaluate=evaluate if evaluator else None,
      eval_every=config.train.eval_every or iterator.batches_per_epoch,
      best_metric=evaluator.main_metric() if evaluator else None, after_export=after_export)


def make_abstract_job(config: ml_collections.ConfigDict, platform: str) -> train.Job:
  """The job of `make_job` for an ahead-of-time compile on `platform`: the same models, loss and
  step from the config files alone (config.json of model.path and teacher.path). Parameters are
  jax.ShapeDtypeStructs; nothing is tokenised, and only a custom table without label_names is
  read, for its classes."""
  checks.check_processes(config)
  kind, num_outputs, label_names = task_outputs(config)
  student, params, teacher, teacher_params = build_abstract_models(config, label_names, num_outputs, platform)
  return _job(config, kind, student, params, teacher, teacher_params, None, max(config.train.num_steps, 1))


def _job(config, kind: str, student, params, teacher, teacher_params, iterator, num_steps: int) -> train.Job:
  """The part of a fine-tuning job that the step needs: models, loss, FLOPs and batch shapes.
  An optim.learning_rate of 0 is replaced in `config` by the width's (default_learning_rate)."""
  if config.optim.learning_rate == 0:
    config.optim.learning_rate = default_learning_rate(student.config)
  loss = build_loss(config, kind, student, teacher)
  teacher_config = teacher.config if teacher is not None else None

  def batch_spec(batch_size: int, length: int) -> dict:
    """ArrayBatches' global batch: int32 [batch, length] inputs and [batch] targets."""
    tokens = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
    rows = lambda dtype: jax.ShapeDtypeStruct((batch_size,), dtype)
    spec = dict(input_ids=tokens, attention_mask=tokens, token_type_ids=tokens)
    if kind == "squad":
      return dict(spec, start_positions=rows(jnp.int32), end_positions=rows(jnp.int32))
    if augmented.is_augmenting(config):  # jobs/augmented.py
      spec.update(task_weight=rows(jnp.float32))
      if not augmented.teacher_in_step(config):
        spec.update(teacher_logits=jax.ShapeDtypeStruct((batch_size, student.config.num_labels), jnp.float32))
    return dict(spec, labels=rows(jnp.float32 if kind == "regression" else jnp.int32))

  def export(trained_params, out_dir):
    """The Hugging Face directory of the trained model, with the tokenizer it was trained with."""
    convert.save_pretrained(student, trained_params, out_dir,
                            tokenizer_dir=config.data.tokenizer_dir or config.model.path, overwrite=True)

  extra_params = None
  if loss.hidden_projection:  # TinyBERT's W_h, trained beside the student (jobs/task_loss.py)
    extra_params = {"hidden_projection": init_hidden_projection(student.config, teacher.config, config.train.seed)}

  return train.Job(
      model=student, params=params, iterator=iterator, num_steps=num_steps, extra_params=extra_params,
      loss_weights={n: getattr(config.loss, f"alpha_{n}") for n in LOSS_NAMES},
      loss_sums=loss.loss_sums, denominators=loss.denominators, frozen_model=teacher, frozen_params=teacher_params,
      export=export,
      flops_per_token=lambda length: flops.distillation_flops_per_token(student.config, teacher_config, length,
                                                                        False, False),
      batch_spec=batch_spec)
