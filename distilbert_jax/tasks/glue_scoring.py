"""A GLUE task's predictions scored with its metrics, and written as the GLUE server's files.

  compute_metrics(task, predictions, labels)   {metric: value} with the task's combined_score
  write_submission(out_dir, task, split, ...)  CoLA.tsv, MNLI-m.tsv, ...: one prediction a row
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from distilbert_jax import atomic
from distilbert_jax.tasks.glue_metrics import METRICS
from distilbert_jax.tasks.glue_tasks import Task, get_task

# Benchmark submission file of each test split (the GLUE server's names).
_SUBMISSION_FILES = {("mnli", "test_matched"): "MNLI-m.tsv", ("mnli", "test_mismatched"): "MNLI-mm.tsv"}


def predicted_labels(task: Union[str, Task], predictions) -> np.ndarray:
  """Class indices [n] from logits [n, classes] or indices [n]; scores [n] from [n] or [n, 1]."""
  task = get_task(task)
  predictions = np.asarray(predictions)
  if task.is_regression:
    return predictions.reshape(len(predictions)).astype(np.float64)
  return predictions.argmax(axis=-1) if predictions.ndim == 2 else predictions


def compute_metrics(task: Union[str, Task], predictions, labels) -> dict[str, float]:
  """The task's metrics (fractions, not percent) as {name: value}, names as in `task.metrics`.

  predictions: logits [n, classes] or class indices [n]; for regression scores [n] or [n, 1].
  labels: [n] class indices or scores. `combined_score` is the mean of the others.
  """
  task = get_task(task)
  predictions, labels = predicted_labels(task, predictions), np.asarray(labels)
  if predictions.shape != labels.shape or not len(labels):
    raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ or are empty")
  result = {name: METRICS[name](predictions, labels) for name in task.metrics if name in METRICS}
  if "combined_score" in task.metrics:
    result["combined_score"] = float(np.mean(list(result.values())))
  return result


def submission_file_name(task: Union[str, Task], split: str = "test") -> str:
  task = get_task(task)
  return _SUBMISSION_FILES.get((task.name, split), f"{task.dir_name or task.name}.tsv")


def write_submission(out_dir: Union[str, os.PathLike], task: Union[str, Task], split: str,
                     ids: Sequence[str], predictions) -> Path:
  """The GLUE server's file for one test split (CoLA.tsv, MNLI-m.tsv, ...): header
  `index<TAB>prediction`, then label names (RTE, QNLI, MNLI) or 0/1 (the binary tasks) or
  scores with 3 decimals (STS-B). predictions: as `compute_metrics`. Returns the path."""
  task = get_task(task)
  values = predicted_labels(task, predictions)
  if len(values) != len(ids):
    raise ValueError(f"{len(ids)} ids but {len(values)} predictions")
  if task.is_regression:
    column = [f"{v:.3f}" for v in values]
  else:
    column = [task.label_names[int(v)] for v in values]
  lines = ["index\tprediction", *(f"{i}\t{p}" for i, p in zip(ids, column))]
  return atomic.write_text(Path(out_dir) / submission_file_name(task, split), "\n".join(lines) + "\n")
