"""A fine-tuning task's data, read and tokenized: GLUE, the user's own table, or SQuAD.

  load_task_data(config, tokenizer)  -> TaskData: the training arrays and the evaluation sets
  holdout(examples, fraction, seed)  a seeded part of train held out when there is no dev set

Arrays are those of glue.encode and squad.Features.arrays: int32 [n, max_length] inputs, the
real length of each row [n], and the targets (labels [n], or start/end positions [n]).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from distilbert_jax.tasks import glue, squad

SQUAD_TASKS = ("squad", "squad_v2")


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
  train_examples: Any = None  # the glue.Examples that `train` encodes (None for SQuAD), for augmentation


def tokenizer_for(config):
  import transformers
  return transformers.AutoTokenizer.from_pretrained(config.data.tokenizer_dir or config.model.path)


def read_custom_table(config, path: str, label_names=None) -> glue.Examples:
  """The user's labelled table `path` with the columns config.data names."""
  d = config.data
  return glue.read_table(path, tuple(d.text_columns), d.label_column or None, label_names=label_names,
                         regression=d.regression)


def _glue_task(config) -> Optional[glue.Task]:
  if config.task != "custom":
    return glue.get_task(config.task)
  return None


def _load_squad(config, tokenizer, splits) -> TaskData:
  d = config.data
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


def load_task_data(config, tokenizer, splits=("train", "eval")) -> TaskData:
  """Reads, holds out (data.holdout_fraction) and tokenizes the task's data."""
  if is_squad(config.task):
    return _load_squad(config, tokenizer, splits)
  d = config.data
  task = _glue_task(config)
  if task is None:  # the user's own table
    given = tuple(d.label_names) if d.get("label_names") else None
    needed = "train" in splits or not (given or d.regression)  # the training file names the classes
    train_examples = read_custom_table(config, d.train, given) if d.train and needed else None
    label_names = given or (train_examples.label_names if train_examples is not None else None)
    task = glue.make_task("custom", None if d.regression else label_names)
    eval_examples = {"dev": read_custom_table(config, d.eval, label_names)} if d.eval and "eval" in splits else {}
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
                  list(encode(test_examples).values()), train_examples if "train" in splits else None)


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
