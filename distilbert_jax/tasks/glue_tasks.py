"""The GLUE task table and the types every GLUE module shares.

  Task, TASKS, get_task(name)     the nine GLUE tasks: labels, metrics, files and TFDS fields
  make_task(name, label_names)    a task for the user's own table
  Examples                        one split's texts and labels, as every reader returns them
  TaskDataError                   data that cannot be read; the message names the file
"""
from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence, Union

import numpy as np

from distilbert_jax import errors
from distilbert_jax.tasks import glue_metrics


class TaskDataError(errors.Error, ValueError):
  """A task's data cannot be read: missing file or column, empty file, unknown label."""


@dataclasses.dataclass(frozen=True)
class Task:
  """One sequence-classification task: its labels, metrics and where its data lives."""
  name: str                                   # registry key: "cola", "sst2", ..., or the user's
  label_names: Optional[tuple[str, ...]]      # None: regression, one output
  metrics: tuple[str, ...]                    # keys of `compute_metrics`' result
  main_metric: str
  dir_name: str = ""                          # directory in the GLUE layout, "CoLA"
  text_columns: tuple[str, ...] = ()          # header names of the text column(s) in the .tsv
  label_column: str = ""
  headerless_columns: tuple[str, ...] = ()    # names of the columns of header-less train/dev files
  splits: tuple[str, ...] = ("train", "dev", "test")
  tfds_fields: tuple[str, ...] = ()           # text features of TFDS glue/<name>
  tfds_label_order: Optional[tuple[int, ...]] = None  # our class index of each TFDS class index

  @property
  def is_regression(self) -> bool:
    return self.label_names is None

  @property
  def is_pair(self) -> bool:
    """Whether each example is a pair of texts (MRPC, STS-B, RTE, ...)."""
    return len(self.text_columns) > 1

  @property
  def num_outputs(self) -> int:
    """Width of the classifier head: the number of classes, or 1 for regression."""
    return 1 if self.label_names is None else len(self.label_names)

  @property
  def dev_splits(self) -> tuple[str, ...]:
    return tuple(s for s in self.splits if s.startswith("dev"))

  @property
  def test_splits(self) -> tuple[str, ...]:
    return tuple(s for s in self.splits if s.startswith("test"))


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_ACC = dict(metrics=("accuracy",), main_metric="accuracy")
_F1_ACC = dict(metrics=("f1", "accuracy", "combined_score"), main_metric="combined_score")
_PAIR = ("sentence1", "sentence2")

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("cola", _BINARY, ("matthews_correlation",), "matthews_correlation", "CoLA",
         ("sentence",), "label", headerless_columns=("source", "label", "original_label", "sentence"),
         tfds_fields=("sentence",)),
    Task("sst2", _BINARY, **_ACC, dir_name="SST-2", text_columns=("sentence",), label_column="label",
         tfds_fields=("sentence",)),
    Task("mrpc", _BINARY, **_F1_ACC, dir_name="MRPC", text_columns=("#1 String", "#2 String"),
         label_column="Quality", tfds_fields=_PAIR),
    Task("qqp", _BINARY, **_F1_ACC, dir_name="QQP", text_columns=("question1", "question2"),
         label_column="is_duplicate", tfds_fields=("question1", "question2")),
    Task("stsb", None, ("pearson", "spearmanr", "combined_score"), "combined_score", "STS-B",
         _PAIR, "score", tfds_fields=_PAIR),
    # TFDS's MNLI classes are entailment, neutral, contradiction: our indices 1, 2, 0.
    Task("mnli", ("contradiction", "entailment", "neutral"), **_ACC, dir_name="MNLI",
         text_columns=_PAIR, label_column="gold_label",
         splits=("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched"),
         tfds_fields=("premise", "hypothesis"), tfds_label_order=(1, 2, 0)),
    Task("qnli", _NLI2, **_ACC, dir_name="QNLI", text_columns=("question", "sentence"),
         label_column="label", tfds_fields=("question", "sentence")),
    Task("rte", _NLI2, **_ACC, dir_name="RTE", text_columns=_PAIR, label_column="label",
         tfds_fields=_PAIR),
    Task("wnli", _BINARY, **_ACC, dir_name="WNLI", text_columns=_PAIR, label_column="label",
         tfds_fields=_PAIR),
]}



def normalise_name(name: str) -> str:
  """A name compared ignoring case, '-', '_' and spaces: "SST-2" is "sst2"."""
  return re.sub(r"[-_ ]", "", name.lower())


def get_task(task: Union[str, Task]) -> Task:
  """A registered GLUE task by name, any case, with or without '-' or a 'glue/' prefix."""
  if isinstance(task, Task):
    return task
  key = normalise_name(task.removeprefix("glue/"))
  if key not in TASKS:
    raise TaskDataError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
  return TASKS[key]


def make_task(name: str, label_names: Optional[Sequence[str]], metrics: Optional[Sequence[str]] = None,
              main_metric: Optional[str] = None) -> Task:
  """A task for the user's own data: accuracy (and F1 of class 1 if binary), or STS-B's metrics."""
  if label_names is None:
    metrics = metrics or ("pearson", "spearmanr", "combined_score")
  else:
    metrics = metrics or (("f1", "accuracy") if len(label_names) == 2 else ("accuracy",))
  unknown = set(metrics) - set(glue_metrics.METRICS) - {"combined_score"}
  if unknown:
    raise TaskDataError(f"task {name!r}: unknown metric(s) {sorted(unknown)}; known: "
                        f"{', '.join([*glue_metrics.METRICS, 'combined_score'])}")
  main = main_metric or ("combined_score" if "combined_score" in metrics else metrics[-1])
  return Task(name, None if label_names is None else tuple(label_names), tuple(metrics), main)


def main_metric(task: Union[str, Task]) -> str:
  return get_task(task).main_metric


@dataclasses.dataclass
class Examples:
  """Texts and labels of one split; `labels` is None where the split has none (test)."""
  ids: list[str]                        # the file's index/id column, else the row number
  text_a: list[str]
  text_b: Optional[list[str]]           # second text of pair tasks, else None
  labels: Optional[np.ndarray]          # [n] int32 class indices, or float32 scores
  label_names: Optional[tuple[str, ...]]
  source: str                           # the file or dataset it came from, for messages

  def __len__(self) -> int:
    return len(self.text_a)
