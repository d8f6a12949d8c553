"""Sequence-classification tasks: GLUE and the user's own tables, tokenized, scored, submitted.

Three readers return one `Examples` type:

  read_glue(glue_dir, task, split)        the GLUE download script's layout, GLUE_DIR/CoLA/train.tsv
  read_tfds(task, split, data_dir=None)   TFDS `glue/<task>` through `tfds.data_source` (array_record,
                                          no TensorFlow); the dataset must already be prepared
  read_table(path, text_columns, ...)     the user's .tsv, .csv or .jsonl file

Labels are class indices into `task.label_names`, in the order of transformers' GLUE
processors (MNLI: contradiction, entailment, neutral; RTE and QNLI: entailment,
not_entailment; the other classification tasks: "0", "1"), so a model fine-tuned here has the
label ids of Hugging Face GLUE checkpoints. TFDS orders MNLI's classes differently; `read_tfds`
maps them by name. STS-B is regression: float32 scores, one model output.

`encode` tokenizes into right-padded [n, max_length] arrays plus each example's real length:
`batch[:, :L]` is exact for every row whose length is at most L, which is how a bucketing input
pipeline (`input_pipeline.plan_epoch` takes the lengths) cuts padding.

Metrics are those of the GLUE benchmark; `main_metric` is what model selection should compare:
MRPC and QQP report F1 and accuracy and STS-B Pearson and Spearman, and their main metric is
`combined_score`, the mean of the two, as the GLUE leaderboard averages them into the GLUE
score (and transformers' run_glue.py names it). MNLI's matched and mismatched dev sets are two
splits (`task.dev_splits`), each scored with accuracy.

Bad input policy: an unknown task or split, a missing file or column, an empty file, a label
outside the label set or a score that is not a number raise `TaskDataError` naming the file (and
line). A row with too few fields or a line that is not a JSON object is skipped, counted and
logged, as TFDS and transformers skip QQP's few broken rows.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Optional, Sequence, Union

from absl import logging
import numpy as np
import scipy.stats

from distilbert_jax import atomic, errors


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

# Benchmark submission file of each test split (the GLUE server's names).
_SUBMISSION_FILES = {("mnli", "test_matched"): "MNLI-m.tsv", ("mnli", "test_mismatched"): "MNLI-mm.tsv"}


def _normalise(name: str) -> str:
  return re.sub(r"[-_ ]", "", name.lower())


def get_task(task: Union[str, Task]) -> Task:
  """A registered GLUE task by name, any case, with or without '-' or a 'glue/' prefix."""
  if isinstance(task, Task):
    return task
  key = _normalise(task.removeprefix("glue/"))
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
  unknown = set(metrics) - set(_METRICS) - {"combined_score"}
  if unknown:
    raise TaskDataError(f"task {name!r}: unknown metric(s) {sorted(unknown)}; known: "
                        f"{', '.join([*_METRICS, 'combined_score'])}")
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


# ---------------------------------------------------------------------------------------------
# Readers


def _open_rows(path: Path, delimiter: str, quoting: int):
  # utf-8-sig: MRPC's files begin with a byte-order mark that would otherwise stick to the
  # first column's name.
  f = open(path, encoding="utf-8-sig", newline="")
  return f, csv.reader(f, delimiter=delimiter, quoting=quoting)


def _check_file(path: Path) -> None:
  if not path.is_file():
    raise TaskDataError(f"{path}: no such file")


class _Skipped:
  """Counts rows that are skipped, and logs the count with a few line numbers."""

  def __init__(self, path):
    self.path, self.lines = path, []

  def add(self, line: int):
    self.lines.append(line)

  def report(self):
    if self.lines:
      logging.warning("%s: skipped %d malformed row(s), e.g. line(s) %s", self.path,
                      len(self.lines), ", ".join(map(str, self.lines[:5])))


def _read_rows(path: Path, columns: Sequence[str], optional: Sequence[str] = (),
               header: Optional[Sequence[str]] = None, delimiter: str = "\t",
               quoting: int = csv.QUOTE_NONE):
  """(line number, {column: value}) of each row with all `columns` (and `optional` if present).

  `header`: the column names of a file without a header row. A missing column raises; a row
  too short for the wanted columns is skipped and counted.
  """
  _check_file(path)
  f, reader = _open_rows(path, delimiter, quoting)
  with f:
    if header is None:
      header = next(reader, None)
      if header is None:
        raise TaskDataError(f"{path}: empty file")
    index = {name.strip(): i for i, name in enumerate(header)}
    for name in columns:
      if name not in index:
        raise TaskDataError(f"{path}: no column {name!r}; the columns are {list(index)}")
    wanted = {name: index[name] for name in [*columns, *optional] if name in index}
    needed = max(wanted.values()) if wanted else 0
    skipped, rows = _Skipped(path), []
    for row in reader:
      if not row or row == [""]:
        continue  # a blank line, such as a trailing one
      if len(row) <= needed:
        skipped.add(reader.line_num)
        continue
      rows.append((reader.line_num, {name: row[i] for name, i in wanted.items()}))
  skipped.report()
  if not rows:
    raise TaskDataError(f"{path}: empty file, no examples")
  return rows


def _label_indices(path, lines, values, label_names) -> np.ndarray:
  lookup = {name: i for i, name in enumerate(label_names)}
  labels = np.empty(len(values), np.int32)
  for k, (line, value) in enumerate(zip(lines, values)):
    if value not in lookup:
      raise TaskDataError(f"{path}: line {line}: label {value!r} is not one of {', '.join(label_names)}")
    labels[k] = lookup[value]
  return labels


def _scores(path, lines, values) -> np.ndarray:
  scores = np.empty(len(values), np.float32)
  for k, (line, value) in enumerate(zip(lines, values)):
    try:
      scores[k] = float(value)
    except (TypeError, ValueError):
      raise TaskDataError(f"{path}: line {line}: score {value!r} is not a number") from None
  return scores


def _task_dir(glue_dir: Path, task: Task) -> Path:
  """GLUE_DIR/<task>, the directory name matched ignoring case and '-' (SST-2, sst2)."""
  if not glue_dir.is_dir():
    raise TaskDataError(f"{glue_dir}: no such directory")
  for candidate in sorted(glue_dir.iterdir()):
    if candidate.is_dir() and _normalise(candidate.name) in (task.name, _normalise(task.dir_name)):
      return candidate
  raise TaskDataError(f"{glue_dir}: no directory for task {task.name} (expected {task.dir_name}/)")


def read_glue(glue_dir: Union[str, os.PathLike], task: Union[str, Task], split: str) -> Examples:
  """One split of a GLUE task in the download script's layout: GLUE_DIR/<Task>/<split>.tsv.

  `split`: one of `task.splits` ("train", "dev", "test"; MNLI: "dev_matched", ...). Test files
  have no labels: `labels` is None and `ids` is their index (id for QQP) column, as the
  submission file needs.
  """
  task = get_task(task)
  if split not in task.splits:
    raise TaskDataError(f"task {task.name}: unknown split {split!r}; its splits: {', '.join(task.splits)}")
  path = _task_dir(Path(glue_dir), task) / f"{split}.tsv"
  labelled = not split.startswith("test")
  headerless = labelled and bool(task.headerless_columns)
  columns = [*task.text_columns, task.label_column] if labelled else list(task.text_columns)
  # Files differ in their id column: "index" in most, "id" in QQP, none in MRPC train/dev.
  rows = _read_rows(path, columns, optional=("index", "id"),
                    header=task.headerless_columns if headerless else None)
  lines = [line for line, _ in rows]
  ids = [r.get("index", r.get("id", str(k))) for k, (_, r) in enumerate(rows)]
  texts = [[r[c] for _, r in rows] for c in task.text_columns]
  labels = None
  if labelled:
    values = [r[task.label_column] for _, r in rows]
    labels = (_scores(path, lines, values) if task.is_regression
              else _label_indices(path, lines, values, task.label_names))
  return Examples(ids, texts[0], texts[1] if len(texts) > 1 else None, labels, task.label_names,
                  str(path))


def _text(value) -> str:
  if isinstance(value, np.ndarray):
    value = value.item()
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds(task: Union[str, Task], split: str, data_dir: Optional[str] = None) -> Examples:
  """One split of TFDS `glue/<task>`; `split` in our names ("dev" for TFDS's "validation").

  The dataset must be prepared in array_record format (`tfds build glue/rte
  --file_format=array_record`), in `data_dir` or TFDS_DATA_DIR. Test splits (label -1) give
  `labels` None.
  """
  task = get_task(task)
  if split not in task.splits:
    raise TaskDataError(f"task {task.name}: unknown split {split!r}; its splits: {', '.join(task.splits)}")
  name, tfds_split = f"glue/{task.name}", split.replace("dev", "validation")
  import tensorflow_datasets as tfds  # Only this reader needs it.
  try:
    source = tfds.data_source(name, split=tfds_split, data_dir=data_dir, try_gcs=False)
  except Exception as e:  # TFDS raises many kinds; the first line of each is the message.
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise TaskDataError(f"{name}:{tfds_split}: cannot open TFDS dataset: {first_line}") from None
  where = f"{name}:{tfds_split}"
  if len(source) == 0:
    raise TaskDataError(f"{where}: empty split, no examples")
  ids, texts, raw_labels = [], [[] for _ in task.tfds_fields], []
  for index in range(len(source)):
    record = source[index]
    for k, field in enumerate(task.tfds_fields):
      if field not in record:
        raise TaskDataError(f"{where}: records have no field {field!r}, only {sorted(record)}")
      texts[k].append(_text(record[field]))
    ids.append(str(int(record.get("idx", index))))
    raw_labels.append(record.get("label", -1))
  raw = np.asarray(raw_labels)
  labels = None
  if not np.all(raw == -1):  # TFDS marks the unlabelled test rows with -1
    if task.is_regression:
      labels = raw.astype(np.float32)
    else:
      raw = raw.astype(np.int64)
      if raw.min() < 0 or raw.max() >= task.num_outputs:
        raise TaskDataError(f"{where}: label {int(raw.min() if raw.min() < 0 else raw.max())} "
                            f"outside 0..{task.num_outputs - 1}")
      order = np.asarray(task.tfds_label_order or range(task.num_outputs), np.int32)
      labels = order[raw]
  return Examples(ids, texts[0], texts[1] if len(texts) > 1 else None, labels, task.label_names, where)


def _sort_labels(values: set[str]) -> tuple[str, ...]:
  # Integer labels in numeric order ("2" before "10"), anything else alphabetically.
  if all(re.fullmatch(r"-?\d+", v) for v in values):
    return tuple(sorted(values, key=int))
  return tuple(sorted(values))


def _json_rows(path: Path, columns: Sequence[str], optional: Sequence[str]):
  _check_file(path)
  rows, skipped = [], _Skipped(path)
  with open(path, encoding="utf-8-sig") as f:
    for line_num, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        record = None
      if not isinstance(record, dict):
        skipped.add(line_num)
        continue
      missing = [c for c in columns if c not in record]
      if missing:
        raise TaskDataError(f"{path}: line {line_num}: no field {missing[0]!r}; the fields are {sorted(record)}")
      rows.append((line_num, {c: record[c] for c in [*columns, *optional] if c in record}))
  skipped.report()
  if not rows:
    raise TaskDataError(f"{path}: empty file, no examples")
  return rows


def read_table(path: Union[str, os.PathLike], text_columns: Sequence[str],
               label_column: Optional[str] = None, *, label_names: Optional[Sequence[str]] = None,
               regression: bool = False, id_column: Optional[str] = None) -> Examples:
  """The user's own task from a .tsv (read like GLUE files: no quoting), .csv (standard CSV
  quoting) or .jsonl file with a header row / one JSON object per line.

  text_columns: one or two column names. label_column: None for an unlabelled file.
  label_names: the class names in index order; by default the sorted distinct labels of this
  file, so read the training file first and pass its `label_names` when reading the others.
  regression: float scores instead of classes. id_column: default the row number.
  """
  path = Path(path)
  if len(text_columns) not in (1, 2):
    raise TaskDataError(f"{path}: give one or two text columns, not {len(text_columns)}")
  columns = [*text_columns, *([label_column] if label_column else [])]
  optional = [id_column] if id_column else []
  suffix = path.suffix.lower()
  if suffix == ".jsonl":
    rows = _json_rows(path, columns, optional)
  elif suffix in (".tsv", ".csv"):
    rows = _read_rows(path, columns, optional,
                      delimiter="\t" if suffix == ".tsv" else ",",
                      quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL)
  else:
    raise TaskDataError(f"{path}: unknown file type {suffix!r}; use .tsv, .csv or .jsonl")
  if id_column and any(id_column not in r for _, r in rows):
    raise TaskDataError(f"{path}: no column {id_column!r} (id_column)")
  lines = [line for line, _ in rows]
  ids = [str(r[id_column]) if id_column else str(k) for k, (_, r) in enumerate(rows)]
  texts = [[_text(r[c]) for _, r in rows] for c in text_columns]
  labels, names = None, None
  if label_column:
    values = [r[label_column] for _, r in rows]
    if regression:
      labels = _scores(path, lines, values)
    else:
      values = [_text(v).strip() for v in values]
      names = tuple(label_names) if label_names is not None else _sort_labels(set(values))
      labels = _label_indices(path, lines, values, names)
  elif label_names is not None:
    names = tuple(label_names)
  return Examples(ids, texts[0], texts[1] if len(texts) > 1 else None, labels, names, str(path))


# ---------------------------------------------------------------------------------------------
# Tokenization


def encode(examples: Examples, tokenizer, max_length: int, chunk_size: int = 8192) -> dict[str, np.ndarray]:
  """Tokenize with a Hugging Face (fast) tokenizer into fixed, right-padded arrays.

  Pairs are truncated "longest_first" (the longer text loses tokens first), as run_glue.py.
  Returns input_ids, attention_mask, token_type_ids: int32 [n, max_length]; lengths: int32 [n],
  the real tokens of each row ([CLS] and [SEP]s included); labels: [n] (int32 or float32),
  only when the examples have labels.
  """
  out = {k: np.zeros((len(examples), max_length), np.int32)
         for k in ("input_ids", "attention_mask", "token_type_ids")}
  for start in range(0, len(examples), chunk_size):
    stop = min(start + chunk_size, len(examples))
    text_b = examples.text_b[start:stop] if examples.text_b is not None else None
    # Padding and truncation are explicit: some tokenizer configs (all-MiniLM-L6-v2's) pad every
    # text to a fixed 128 by default.
    batch = tokenizer(examples.text_a[start:stop], text_b, max_length=max_length,
                      truncation="longest_first", padding="max_length", padding_side="right",
                      return_attention_mask=True, return_token_type_ids=True)
    for key in out:
      out[key][start:stop] = np.asarray(batch[key], np.int32)
  out["lengths"] = out["attention_mask"].sum(axis=1).astype(np.int32)
  if examples.labels is not None:
    out["labels"] = examples.labels
  return out


# ---------------------------------------------------------------------------------------------
# Metrics


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
  """F1 of the positive class 1; 0 when there is no positive in either (as sklearn)."""
  tp = np.sum((predictions == 1) & (labels == 1))
  fp = np.sum((predictions == 1) & (labels != 1))
  fn = np.sum((predictions != 1) & (labels == 1))
  return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Matthews correlation from the confusion matrix (multi-class form, as sklearn); 0 when the
  predictions or the labels are constant, where the formula is 0/0."""
  classes, inverse = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
  n = len(labels)
  confusion = np.zeros((len(classes), len(classes)), np.float64)
  np.add.at(confusion, (inverse[:n], inverse[n:]), 1)
  true_sum, pred_sum = confusion.sum(axis=1), confusion.sum(axis=0)
  cov_tp = np.trace(confusion) * n - true_sum @ pred_sum
  cov_pp = n * n - pred_sum @ pred_sum
  cov_tt = n * n - true_sum @ true_sum
  return float(cov_tp / np.sqrt(cov_tt * cov_pp)) if cov_tt * cov_pp else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Pearson correlation; 0 (not NaN) when either side is constant."""
  x = predictions.astype(np.float64) - predictions.mean()
  y = labels.astype(np.float64) - labels.mean()
  denominator = np.sqrt((x @ x) * (y @ y))
  return float(np.clip(x @ y / denominator, -1.0, 1.0)) if denominator else 0.0


def spearmanr(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Spearman rank correlation: Pearson of the ranks (ties get their mean rank)."""
  return pearson(scipy.stats.rankdata(predictions), scipy.stats.rankdata(labels))


_METRICS = {"accuracy": accuracy, "f1": f1, "matthews_correlation": matthews_correlation,
            "pearson": pearson, "spearmanr": spearmanr}


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
  result = {name: _METRICS[name](predictions, labels) for name in task.metrics if name in _METRICS}
  if "combined_score" in task.metrics:
    result["combined_score"] = float(np.mean(list(result.values())))
  return result


# ---------------------------------------------------------------------------------------------
# Writers


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
