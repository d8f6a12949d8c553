"""Fine-tuning and task distillation on GLUE, your own labelled tables and SQuAD: a job of train.py.

  distilbert-jax finetune --config configs/glue.py --config.task=rte --config.model.path=MODEL_DIR \
      --config.data.dir=GLUE_DIR --workdir runs/rte
  distilbert-jax finetune --config configs/squad.py --config.model.path=MODEL_DIR \
      --config.data.train=train-v1.1.json --config.data.eval=dev-v1.1.json --workdir runs/squad
  distilbert-jax evaluate --model runs/rte/export --task glue/rte --data GLUE_DIR

Losses (weights `config.loss.alpha_*`, each a mean over the batch's examples or features):
  loss_task: cross-entropy on the labels (squared error for regression; for SQuAD the mean of
    the start and end cross-entropies, as transformers' question-answering heads)
  loss_kd: with a fine-tuned teacher (`config.teacher.path`), T^2 KL(teacher || student) of the
    softmax at temperature T (regression: squared error to the teacher's prediction; SQuAD: the
    mean of the start and end KLs): the paper's second distillation step
  loss_hidden: MSE between chosen student and teacher hidden states over real tokens (TinyBERT)

Evaluation runs every `train.eval_every` steps (0: once an epoch) over every example (the last
batch padded and masked, never dropped); the parameters with the best main metric of the task are
kept in WORKDIR/best and exported to WORKDIR/export with their predictions and eval_results.json.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging as pylogging
import math
import os
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from distilbert_jax import atomic, convert, errors, losses, models, sharding, train
from distilbert_jax.hardware import flops
from distilbert_jax.jobs import checks
from distilbert_jax.tasks import glue, squad
from distilbert_jax.data import input_pipeline

LOSS_NAMES = ("task", "kd", "hidden")
SQUAD_TASKS = ("squad", "squad_v2")


# ===================================================================================== tasks
def is_squad(task: str) -> bool:
  return task.lower().replace("/", "_") in SQUAD_TASKS or task.lower() in ("squad/v1.1", "squad/v2.0")


def head_for(task: str) -> str:
  return "question_answering" if is_squad(task) else "sequence_classification"


@dataclasses.dataclass
class EvalSet:
  """One evaluation split: model inputs, and what scoring it needs."""
  name: str
  arrays: dict  # input_ids, attention_mask, token_type_ids: [n, max_length]; lengths [n]; labels [n]
  examples: Any  # glue.Examples, or the list of squad.Example
  features: Optional[squad.Features] = None


@dataclasses.dataclass
class TaskData:
  task: Any  # glue.Task, or the SQuAD task name
  train: Optional[dict]  # arrays as EvalSet.arrays (SQuAD: start_positions, end_positions)
  evals: list  # [EvalSet]: scored, and the first one's main metric picks the best model
  label_names: Optional[tuple]  # None: regression or SQuAD
  tests: list = dataclasses.field(default_factory=list)  # [EvalSet] without labels: predicted only


def _glue_task(config) -> glue.Task:
  if config.task != "custom":
    return glue.get_task(config.task)
  return None


def _read_table(config, path: str, label_names=None):
  d = config.data
  return glue.read_table(path, tuple(d.text_columns), d.label_column or None, label_names=label_names,
                         regression=d.regression)


def load_task_data(config, tokenizer, splits=("train", "eval")) -> TaskData:
  """Reads, holds out (data.holdout_fraction) and tokenizes the task's data."""
  d = config.data
  if is_squad(config.task):
    train_set = None
    version_2 = config.task.lower().endswith("v2") or config.task.lower().endswith("v2.0")
    read = (lambda split, path: squad.read_tfds(split, "v2.0" if version_2 else "v1.1", d.tfds_data_dir or None)) \
        if d.source == "tfds" else (lambda split, path: squad.read_squad(path))
    if "train" in splits:
      examples = read("train", d.train)
      features = squad.prepare_features(examples, tokenizer, d.max_length, d.doc_stride, training=True,
                                        max_query_length=d.max_query_length)
      train_set = dict(features.arrays(), lengths=features.attention_mask.sum(axis=1).astype(np.int32))
    evals = []
    if "eval" in splits and (d.eval or d.source == "tfds"):
      examples = read("validation", d.eval)
      features = squad.prepare_features(examples, tokenizer, d.max_length, d.doc_stride,
                                        max_query_length=d.max_query_length)
      arrays = dict(features.arrays(), lengths=features.attention_mask.sum(axis=1).astype(np.int32))
      evals.append(EvalSet("dev", arrays, examples, features))
    return TaskData(config.task, train_set, evals, None)

  task = _glue_task(config)
  if task is None:  # the user's own table
    given = tuple(d.label_names) if d.get("label_names") else None
    needed = "train" in splits or not (given or d.regression)  # the training file names the classes
    train_examples = _read_table(config, d.train, given) if d.train and needed else None
    label_names = given or (train_examples.label_names if train_examples is not None else None)
    task = glue.make_task("custom", None if d.regression else label_names)
    eval_examples = {"dev": _read_table(config, d.eval, label_names)} if d.eval and "eval" in splits else {}
  else:
    read = (lambda split: glue.read_tfds(task, split, d.tfds_data_dir or None)) if d.source == "tfds" \
        else (lambda split: glue.read_glue(d.dir, task, split))
    train_examples = read("train") if ("train" in splits or d.holdout_fraction > 0) else None
    eval_examples = {s: read(s) for s in task.dev_splits} if "eval" in splits and d.holdout_fraction <= 0 else {}
  if d.holdout_fraction > 0:  # tasks without a dev set here (SST-2, STS-B): a seeded part of train
    train_examples, held_out = holdout(train_examples, d.holdout_fraction, d.holdout_seed)
    eval_examples = {"holdout": held_out} if "eval" in splits else {}
  test_examples = {}
  if "eval" in splits and config.task == "custom" and d.get("test"):  # the user's unlabelled file
    test_examples = {"test": glue.read_table(d.test, tuple(d.text_columns), label_names=label_names)}
  elif "eval" in splits and d.get("predict_test"):  # the GLUE task's test split(s)
    test_examples = {s: read(s) for s in task.test_splits}
  train_arrays = glue.encode(train_examples, tokenizer, d.max_length) if "train" in splits else None
  encode = lambda examples: {name: EvalSet(name, glue.encode(ex, tokenizer, d.max_length), ex)
                             for name, ex in examples.items()}
  return TaskData(task, train_arrays, list(encode(eval_examples).values()), task.label_names,
                  list(encode(test_examples).values()))


def holdout(examples: glue.Examples, fraction: float, seed: int) -> tuple[glue.Examples, glue.Examples]:
  """(the rest, a seeded random `fraction` of the examples), each in file order."""
  order = np.random.default_rng(seed).permutation(len(examples))
  cut = int(round(len(examples) * fraction))
  held, kept = np.sort(order[:cut]), np.sort(order[cut:])
  take = lambda rows: dataclasses.replace(
      examples, ids=[examples.ids[i] for i in rows], text_a=[examples.text_a[i] for i in rows],
      text_b=None if examples.text_b is None else [examples.text_b[i] for i in rows],
      labels=None if examples.labels is None else examples.labels[rows])
  return take(kept), take(held)


# ===================================================================================== batches
class ArrayBatches:
  """Shuffled, length-bucketed global batches over in-memory arrays (input_pipeline.plan_epoch),
  endless; this process's rows of each. State: the next global batch index."""

  def __init__(self, arrays: dict, *, global_batch_size: int, bucket_lengths, seed: int,
               process_index: int = 0, process_count: int = 1):
    self.arrays = {k: v for k, v in arrays.items() if k != "lengths"}
    self.lengths = arrays["lengths"]
    self.global_batch_size, self.seed = global_batch_size, seed
    self.bucket_lengths = tuple(int(b) for b in bucket_lengths)
    if self.bucket_lengths[-1] < self.lengths.max(initial=0):
      raise errors.ConfigError(f"data.bucket_lengths {self.bucket_lengths} end below the longest row "
                               f"({int(self.lengths.max())} tokens); raise the last one to data.max_length")
    per_process = global_batch_size // process_count
    self._rows = slice(process_index * per_process, (process_index + 1) * per_process)
    self.batches_per_epoch = len(self.lengths) // global_batch_size
    if not self.batches_per_epoch:
      raise errors.ConfigError(f"{len(self.lengths)} training examples make no batch of "
                               f"train.batch_size={global_batch_size}")
    self.next_batch, self._plan = 0, (None, None)

  def _epoch_plan(self, epoch: int):
    if self._plan[0] != epoch:
      self._plan = (epoch, input_pipeline.plan_epoch(self.lengths, global_batch_size=self.global_batch_size,
                                                     bucket_lengths=self.bucket_lengths, seed=self.seed,
                                                     epoch=epoch))
    return self._plan[1]

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    epoch, index = divmod(self.next_batch, self.batches_per_epoch)
    batches, lengths = self._epoch_plan(epoch)
    rows, length = batches[index, self._rows], int(lengths[index])
    self.next_batch += 1
    return {k: v[rows, :length] if v.ndim == 2 else v[rows] for k, v in self.arrays.items()}

  def get_state(self) -> dict:
    return {"next_batch": self.next_batch, "num_examples": len(self.lengths),
            "global_batch_size": self.global_batch_size, "seed": self.seed}

  def set_state(self, state: dict) -> None:
    expected = {"num_examples": len(self.lengths), "global_batch_size": self.global_batch_size, "seed": self.seed}
    if any(state.get(k) != v for k, v in expected.items()):
      raise train.TrainingError(f"the checkpoint's data position {state} belongs to other data or settings "
                                f"({expected})")
    self.next_batch = int(state["next_batch"])


def eval_batches(arrays: dict, batch_size: int, bucket_lengths):
  """Yields (row indices [batch_size] with -1 for padding rows, {name: [batch_size, L]}): every
  example once, in length-sorted batches; the last batch is padded, never dropped."""
  lengths = arrays["lengths"]
  batches, batch_lengths = input_pipeline.plan_epoch(
      lengths, global_batch_size=batch_size, bucket_lengths=bucket_lengths, seed=0, epoch=0, shuffle=False,
      drop_remainder=False)
  names = ("input_ids", "attention_mask", "token_type_ids")
  for rows, length in zip(batches, batch_lengths):
    safe = np.where(rows >= 0, rows, 0)
    batch = {k: arrays[k][safe, :length] for k in names}
    batch["attention_mask"] = np.where((rows >= 0)[:, None], batch["attention_mask"], 0)
    yield rows, batch


# ===================================================================================== models
def model_kwargs(model, batch) -> dict:
  """The model's inputs from a batch: DistilBERT has no token types."""
  kw = dict(attention_mask=batch["attention_mask"])
  if model.config.model_type == "bert":
    kw["token_type_ids"] = batch["token_type_ids"]
  return kw


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
  directory = Path(workdir) / "checkpoints"
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


# ===================================================================================== losses
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
    return {"task": rows, "kd": rows, "hidden": hidden}

  def loss_sums(self, params, teacher_params, batch, dropout_rng):
    l = self.config.loss
    need_hidden = l.alpha_hidden > 0 and self.teacher is not None
    student_out = self.student.apply({"params": params}, batch["input_ids"], deterministic=False,
                                     rngs={"dropout": dropout_rng}, output_hidden_states=need_hidden,
                                     **model_kwargs(self.student, batch))
    teacher_out = None
    if self.teacher is not None:
      teacher_out = jax.lax.stop_gradient(self.teacher.apply(
          {"params": teacher_params}, batch["input_ids"], deterministic=True, output_hidden_states=need_hidden,
          **model_kwargs(self.teacher, batch)))
    sums = {}
    ones = jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
    if self.kind == "squad":
      start, end = _masked_span_logits(student_out, batch["attention_mask"])
      sums["task"] = 0.5 * (_cross_entropy(start, batch["start_positions"]) + _cross_entropy(end, batch["end_positions"]))
      if teacher_out is not None and l.alpha_kd > 0:
        t_start, t_end = _masked_span_logits(teacher_out, batch["attention_mask"])
        sums["kd"] = 0.5 * (losses.kl_div_loss(start, t_start, ones, l.temperature)[0]
                            + losses.kl_div_loss(end, t_end, ones, l.temperature)[0])
    elif self.kind == "regression":
      prediction = student_out.logits[:, 0].astype(jnp.float32)
      sums["task"] = jnp.sum((prediction - batch["labels"]) ** 2)
      if teacher_out is not None and l.alpha_kd > 0:
        sums["kd"] = jnp.sum((prediction - teacher_out.logits[:, 0].astype(jnp.float32)) ** 2)
    else:
      logits = student_out.logits.astype(jnp.float32)
      sums["task"] = _cross_entropy(logits, batch["labels"])
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


def _cross_entropy(logits, labels):
  """Summed cross-entropy: logits [batch, classes], labels [batch] int."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.take_along_axis(log_probs, labels.astype(jnp.int32)[:, None], axis=-1))


# ===================================================================================== evaluation
class Evaluator:
  """Predictions and metrics of a model on the task's evaluation sets."""

  def __init__(self, model, data: TaskData, config, mesh=None):
    self.model, self.data, self.config = model, data, config
    self.mesh = mesh or sharding.make_mesh(-1, 1, 1)
    rows = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    self.batch_size = int(math.ceil(config.eval.batch_size / rows) * rows)
    out_names = ("start_logits", "end_logits") if head_for(_task_name(data)) == "question_answering" else ("logits",)

    def predict(params, batch):
      out = model.apply({"params": params}, batch["input_ids"], deterministic=True, **model_kwargs(model, batch))
      return tuple(getattr(out, n).astype(jnp.float32) for n in out_names)
    self._predict = jax.jit(predict, compiler_options=models.compiler_options(head_for(_task_name(data)),
                                                                              dtype=model.dtype))

  def outputs(self, params, eval_set: EvalSet) -> tuple:
    """Model outputs for every row of eval_set, in its order: ([n, C],) or ([n, L], [n, L])."""
    arrays = eval_set.arrays
    n, max_length = arrays["input_ids"].shape
    results = None
    for rows, batch in eval_batches(arrays, self.batch_size, tuple(self.config.data.bucket_lengths)):
      local = _process_rows(batch)
      outs = self._predict(params, sharding.global_batch_from_local(local, self.mesh))
      outs = tuple(_to_host(o) for o in outs)
      if results is None:
        results = tuple(np.full((n,) + ((max_length,) if o.ndim == 2 and self._is_span() else o.shape[1:]),
                                -1e9 if self._is_span() else 0.0, np.float32) for o in outs)
      real = rows >= 0
      for result, o in zip(results, outs):
        if self._is_span():
          result[rows[real], :o.shape[1]] = o[real]
        else:
          result[rows[real]] = o[real]
    return results

  def _is_span(self) -> bool:
    return is_squad(_task_name(self.data))

  def evaluate(self, params) -> tuple[dict, dict]:
    """({metric: value}, {split: predictions}); metric names are prefixed by the split when
    there are several evaluation sets (MNLI's dev_matched and dev_mismatched)."""
    metrics, predictions = {}, {}
    for eval_set in self.data.evals:
      prefix = f"{eval_set.name}_" if len(self.data.evals) > 1 else ""
      outs = self.outputs(params, eval_set)
      if self._is_span():
        s = self.config.squad
        # The task squad_v2, the flag, or data with unanswerable questions: each means v2.0.
        version_2 = (s.version_2 or _task_name(self.data).lower().endswith(("v2", "v2.0"))
                     or squad.has_unanswerable(eval_set.examples))
        answers = squad.postprocess(eval_set.examples, eval_set.features, outs[0], outs[1],
                                    n_best_size=s.n_best_size, max_answer_length=s.max_answer_length,
                                    version_2=version_2, null_score_diff_threshold=s.null_score_diff_threshold)
        scores = squad.evaluate(eval_set.examples, answers, version_2=version_2)
        predictions[eval_set.name] = answers
      else:
        logits = outs[0]
        scores = glue.compute_metrics(self.data.task, logits, eval_set.arrays["labels"]) \
            if "labels" in eval_set.arrays else {}
        predictions[eval_set.name] = logits
      metrics.update({f"{prefix}{k}": float(v) for k, v in scores.items()})
      metrics[f"{prefix}num_examples"] = len(eval_set.examples)
    return metrics, predictions

  def main_metric(self) -> str:
    name = "f1" if self._is_span() else self.data.task.main_metric
    return f"{self.data.evals[0].name}_{name}" if len(self.data.evals) > 1 else name

  def write(self, out_dir: Path, metrics: dict, predictions: dict) -> None:
    """eval_results.json and the predictions: SQuAD predictions.json ({id: answer}), GLUE the
    benchmark's submission format, one file per split under predictions/SPLIT/."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "eval_results.json", strict_json(metrics))
    for eval_set in self.data.evals:
      if self._is_span():
        name = "predictions.json" if len(self.data.evals) == 1 else f"predictions_{eval_set.name}.json"
        squad.write_predictions(out_dir / name, predictions[eval_set.name])
      else:
        glue.write_submission(out_dir / "predictions" / eval_set.name, self.data.task, eval_set.name,
                              eval_set.examples.ids, predictions[eval_set.name])

  def write_test_predictions(self, params, out_dir: Path) -> list:
    """The GLUE server's submission files (CoLA.tsv, MNLI-m.tsv, ...) for the unlabelled test
    sets, in out_dir/predictions/test/. Returns their paths."""
    return [glue.write_submission(out_dir / "predictions" / "test", self.data.task, test_set.name,
                                  test_set.examples.ids, self.outputs(params, test_set)[0])
            for test_set in self.data.tests]


def _task_name(data: TaskData) -> str:
  return data.task if isinstance(data.task, str) else data.task.name


def _process_rows(batch: dict) -> dict:
  """This process's rows of a global batch."""
  count, index = jax.process_count(), jax.process_index()
  rows = next(iter(batch.values())).shape[0] // count
  return {k: v[index * rows:(index + 1) * rows] for k, v in batch.items()}


def _to_host(x) -> np.ndarray:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


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
  if not config.teacher.path and (l.alpha_kd > 0 or l.alpha_hidden > 0) and l.alpha_task <= 0:
    raise errors.ConfigError("loss.alpha_task is 0 and there is no teacher.path: nothing to learn from")
  checks.check_schedule(config)
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


# ===================================================================================== job
def tokenizer_for(config):
  import transformers
  return transformers.AutoTokenizer.from_pretrained(config.data.tokenizer_dir or config.model.path)


def _kind(config, task) -> str:
  if is_squad(config.task):
    return "squad"
  return "regression" if task.is_regression else "classification"


def _layer_map(config, student, teacher) -> tuple:
  if config.loss.hidden_layer_map or config.loss.alpha_hidden <= 0 or teacher is None:
    return losses.hidden_layer_map(config.loss.hidden_layer_map, ())
  layers = tuple(config.model.layers) or tuple(range(student.config.num_hidden_layers))
  return losses.hidden_layer_map(config.loss.hidden_layer_map, layers)


def make_job(config: ml_collections.ConfigDict, workdir: Path) -> train.Job:
  t = config.train
  checks.check_processes(config)
  data = load_task_data(config, tokenizer_for(config))
  head = head_for(config.task)
  kind = _kind(config, data.task)
  num_outputs = 2 if kind == "squad" else data.task.num_outputs
  student, params = build_student(config, head, data.label_names, num_outputs, t.seed,
                                  resuming=has_checkpoints(workdir))
  teacher, teacher_params = build_teacher(config, head, num_outputs)
  iterator = ArrayBatches(data.train, global_batch_size=t.batch_size, bucket_lengths=config.data.bucket_lengths,
                          seed=config.data.shuffle_seed, process_index=jax.process_index(),
                          process_count=jax.process_count())
  num_steps = t.num_steps if t.num_steps > 0 else int(math.ceil(t.num_epochs * iterator.batches_per_epoch))
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
    evaluator.write(Path(workdir), metrics, predictions)
    evaluator.write_test_predictions(params, Path(workdir))
    return {f"final_eval_{k}": v for k, v in metrics.items()}

  job = _job(config, kind, student, params, teacher, teacher_params, iterator, num_steps)
  return dataclasses.replace(
      job, tokenizer_dir=config.data.tokenizer_dir or config.model.path, evaluate=evaluate if evaluator else None,
      eval_every=t.eval_every or iterator.batches_per_epoch,
      best_metric=evaluator.main_metric() if evaluator else None, after_export=after_export)


def make_abstract_job(config: ml_collections.ConfigDict, platform: str) -> train.Job:
  """The job of `make_job` for an ahead-of-time compile on `platform`: the same models, loss and
  step from the config files alone (config.json of model.path and teacher.path). Parameters are
  jax.ShapeDtypeStructs; nothing is tokenised, and only a custom table without label_names is
  read, for its classes."""
  checks.check_processes(config)
  m, t, d = config.model, config.teacher, config.data
  head = head_for(config.task)
  if is_squad(config.task):
    kind, num_outputs, label_names = "squad", 2, None
  elif config.task == "custom":
    kind = "regression" if d.regression else "classification"
    label_names = None if d.regression else (tuple(d.label_names) or _read_table(config, d.train).label_names)
    num_outputs = 1 if d.regression else len(label_names)
  else:
    task = glue.get_task(config.task)
    kind, num_outputs, label_names = _kind(config, task), task.num_outputs, task.label_names
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
  if t.path:
    teacher_config = convert.read_model_config(t.path, **train.compile_fields(t, platform))
    teacher = models.get_model(teacher_config, head, dtype=models.resolve_dtype(t.dtype, platform))
    teacher_params = train.abstract_params(teacher, teacher.dtype)
  return _job(config, kind, student, train.abstract_params(student, jnp.float32), teacher, teacher_params, None,
              max(config.train.num_steps, 1))


def _job(config, kind: str, student, params, teacher, teacher_params, iterator, num_steps: int) -> train.Job:
  """The part of a fine-tuning job that the step needs: models, loss, FLOPs and batch shapes."""
  loss = TaskLoss(config, student, teacher, kind, _layer_map(config, student, teacher))
  teacher_config = teacher.config if teacher is not None else None

  def batch_spec(batch_size: int, length: int) -> dict:
    """ArrayBatches' global batch: int32 [batch, length] inputs and [batch] targets."""
    tokens = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
    rows = lambda dtype: jax.ShapeDtypeStruct((batch_size,), dtype)
    spec = dict(input_ids=tokens, attention_mask=tokens, token_type_ids=tokens)
    if kind == "squad":
      return dict(spec, start_positions=rows(jnp.int32), end_positions=rows(jnp.int32))
    return dict(spec, labels=rows(jnp.float32 if kind == "regression" else jnp.int32))

  def export(trained_params, out_dir):
    """The Hugging Face directory of the trained model, with the tokenizer it was trained with."""
    convert.save_pretrained(student, trained_params, out_dir,
                            tokenizer_dir=config.data.tokenizer_dir or config.model.path, overwrite=True)

  return train.Job(
      model=student, params=params, iterator=iterator, num_steps=num_steps,
      loss_weights={n: getattr(config.loss, f"alpha_{n}") for n in LOSS_NAMES},
      loss_sums=loss.loss_sums, denominators=loss.denominators, frozen_model=teacher, frozen_params=teacher_params,
      export=export,
      flops_per_token=lambda length: flops.distillation_flops_per_token(student.config, teacher_config, length,
                                                                        False, False),
      batch_spec=batch_spec)


def evaluate_main(model_dir: str, task: str, data: str, *, split: Optional[str] = None,
                  max_length: Optional[int] = None, batch_size: int = 64, out_dir: Optional[str] = None,
                  text_columns=(), label_column: str = "", regression: bool = False) -> dict:
  """`distilbert-jax evaluate`: metrics of a fine-tuned model directory on a task's data.

  task: a GLUE task ("rte", "glue/rte"), "squad" / "squad_v2", or "custom" with a table file.
  data: GLUE_DIR, "tfds", a SQuAD JSON file or the table file. max_length: default 128 (SQuAD
  384), or the model's max_position_embeddings if fewer. A one-output head is scored as
  regression. split: that split only; a GLUE test split has no labels, and its predictions are
  written to out_dir in the benchmark's submission format.
  """
  spans = task.lower().startswith("squad")
  if not os.path.isdir(model_dir):
    raise errors.ConfigError(f"{model_dir}: no such model directory")
  model_dir = os.path.abspath(model_dir)
  data = data if data == "tfds" else os.path.abspath(data)
  name = "squad_v2" if spans and "v2" in task.lower() else ("squad" if spans else task.split("/")[-1])
  glue_task = None if spans or name == "custom" else glue.get_task(name)
  test_split = glue_task is not None and split in glue_task.test_splits
  if split is not None and glue_task is not None and split not in glue_task.splits:
    raise errors.ConfigError(f"--split {split}: task {glue_task.name} has the splits "
                             f"{', '.join(s for s in glue_task.splits if s != 'train')}")
  if test_split and not out_dir:
    raise errors.ConfigError(f"--split {split}: the test split has no labels to score; add --out DIR to write "
                             f"its predictions")
  model_config = convert.read_model_config(model_dir)
  positions = model_config.max_position_embeddings
  max_length = max_length or min(384 if spans else 128, positions)
  if max_length > positions:
    raise errors.ConfigError(f"--max-length {max_length}: longer than max_position_embeddings={positions} of "
                             f"{model_dir}; use --max-length {positions} or less (longer texts are truncated)")
  one_output = model_config.num_labels == 1
  if name == "custom" and regression and not one_output:
    raise errors.ConfigError(f"--regression: {model_dir} has a {model_config.num_labels}-class head, not the one "
                             f"output of a regression head")
  # run_qa.py's query length and stride (64 and 128 of 384), scaled down for shorter windows.
  max_query_length, doc_stride = min(64, max_length // 6), min(128, max_length // 3)
  config = ml_collections.ConfigDict(dict(
      task=name, model=dict(path=model_dir), eval=dict(batch_size=batch_size),
      squad=dict(version_2=spans and "v2" in task.lower(), n_best_size=20, max_answer_length=30,
                 null_score_diff_threshold=0.0),
      data=dict(source="tfds" if data == "tfds" else "dir", dir="" if data == "tfds" else data, tfds_data_dir="",
                train="", eval=data, text_columns=tuple(text_columns), label_column=label_column,
                regression=regression or one_output, label_names=(), holdout_fraction=0.0, holdout_seed=0,
                tokenizer_dir="", predict_test=test_split, max_length=max_length, doc_stride=doc_stride,
                max_query_length=max_query_length)))
  lengths = (32, 64, 128, 256, 384, 512)
  config.data.bucket_lengths = tuple(b for b in lengths if b < config.data.max_length) + (config.data.max_length,)
  model, params = convert.load_pretrained(model_dir, head=head_for(config.task))
  if config.task == "custom" and not config.data.regression:  # the model's own label names give the classes
    config.data.label_names = tuple(model.config.id2label or ())
  task_data = load_task_data(config, tokenizer_for(config), splits=("eval",))
  if split is not None:
    task_data.evals = [e for e in task_data.evals if e.name == split]
    task_data.tests = [e for e in task_data.tests if e.name == split]
  if not task_data.evals and not task_data.tests:
    raise errors.ConfigError(f"{data}: no split {split!r} for task {task!r}" if split else
                             f"{data}: no evaluation split found for task {task!r}")
  evaluator = Evaluator(model, task_data, config)
  metrics, predictions = evaluator.evaluate(params)
  if task_data.tests:
    written = evaluator.write_test_predictions(params, Path(out_dir))
    metrics.update(num_examples=sum(len(t.examples) for t in task_data.tests))
    print(f"predictions of the unlabelled {split} split written to {', '.join(map(str, written))}")
  elif out_dir:
    evaluator.write(Path(out_dir), metrics, predictions)
  print(strict_json(metrics), end="")
  return metrics


def strict_json(metrics: dict) -> str:
  """Metrics as JSON, which has no NaN: an undefined value (a NaN or infinite metric) is null."""
  defined = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
  return json.dumps(defined, indent=2, allow_nan=False) + "\n"
