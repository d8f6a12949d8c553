"""Readers of GLUE splits and the user's own tables; each returns glue_tasks.Examples.

  read_glue(glue_dir, task, split)        the GLUE download script's layout, GLUE_DIR/CoLA/train.tsv
  read_tfds(task, split, data_dir=None)   TFDS `glue/<task>` through `tfds.data_source` (array_record,
                                          no TensorFlow); the dataset must already be prepared
  read_table(path, text_columns, ...)     the user's .tsv, .csv or .jsonl file
  read_tsv_rows(path)                     the fields of each row of a GLUE .tsv, as read_glue splits them

Bad input: see glue.py. A row with too few fields or a line that is not a JSON object is
skipped, counted and logged; anything else wrong raises TaskDataError naming the file.
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Optional, Sequence, Union

from absl import logging
import numpy as np

from distilbert_jax.data.sources import open_tfds
from distilbert_jax.tasks.glue_tasks import Examples, Task, TaskDataError, get_task, normalise_name


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


def read_tsv_rows(path: Union[str, os.PathLike]) -> list[list[str]]:
  """The fields of each non-blank row of a GLUE .tsv file, its header row included, split as
  read_glue splits them (tabs, no quoting, a byte-order mark dropped): "\t".join(fields)
  writes the row back."""
  path = Path(path)
  _check_file(path)
  f, reader = _open_rows(path, "\t", csv.QUOTE_NONE)
  with f:
    return [row for row in reader if row and row != [""]]


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
    if candidate.is_dir() and normalise_name(candidate.name) in (task.name, normalise_name(task.dir_name)):
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
  source = open_tfds(name, tfds_split, TaskDataError, data_dir=data_dir)
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
