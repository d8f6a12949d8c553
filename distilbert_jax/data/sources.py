"""Source specs and their readers: which files (or TFDS dataset) a spec names, and its texts.

Sources are spec strings (the config field `config.data.sources`):

  PATH or GLOB             a plain path: the same as text:PATH
  text:GLOB                one text per line, blank lines skipped; `.gz` read transparently
  jsonl:GLOB:FIELD         JSON lines, the string value of FIELD is the text (`.gz` too)
  tsv:PATH:COL1,COL2       tab-separated with a header row, read like GLUE files (QUOTE_NONE);
                           each chosen column of each row is one text
  tfds:NAME:SPLIT:FIELD    `tfds.data_source` (array_record, no TensorFlow needed), e.g.
                           tfds:wikipedia/20230601.en:train:text; the dataset must already be
                           prepared in the TFDS data dir (TFDS_DATA_DIR), nothing is downloaded

Bad input: a bad spec, a missing file, a glob matching nothing, an unreadable or empty source,
a TSV column or TFDS dataset that does not exist raise `InputPipelineError`, one line naming
the source or file; a line that is not UTF-8, or a malformed JSON line / TSV row, is skipped
and counted (`undecodable_lines`, `malformed_lines` in the counts a reader is given).
"""
from __future__ import annotations

import collections
import csv
import glob
import gzip
import itertools
import json
import os
from typing import Iterator, Optional, Sequence

import numpy as np

from distilbert_jax import storage
from distilbert_jax.data import InputPipelineError

SPEC_FORMS = "a text file, text:GLOB, jsonl:GLOB:FIELD, tsv:PATH:COL1,COL2 or tfds:NAME:SPLIT:FIELD"


def parse_spec(spec: str) -> tuple[str, list[str]]:
  """(kind, parts): text [GLOB], jsonl [GLOB, FIELD], tsv [PATH, COLUMNS], tfds [NAME, SPLIT,
  FIELD]. A spec without a kind, or one that names existing files, is a plain path of text files."""
  kind, colon, rest = spec.partition(":")
  known = kind in ("text", "jsonl", "tsv", "tfds")
  if not colon or (not known and glob.glob(spec)):
    return "text", [spec]
  if not known:
    raise InputPipelineError(f"bad source spec {spec!r}: expected {SPEC_FORMS}")
  parts = {"text": [rest], "jsonl": rest.rsplit(":", 1), "tsv": rest.rsplit(":", 1)}
  if kind == "tfds":
    name, _, split_field = rest.partition(":")
    parts["tfds"] = [name, *split_field.rsplit(":", 1)]
  expected = {"text": 1, "jsonl": 2, "tsv": 2, "tfds": 3}
  if len(parts[kind]) != expected[kind] or not all(parts[kind]):
    raise InputPipelineError(f"bad source spec {spec!r}: expected {SPEC_FORMS}")
  return kind, parts[kind]


def absolute_source(spec: str) -> str:
  """The spec with its path or glob made absolute, from the current directory (a TFDS spec, or
  one that does not parse, is returned as it is: reading it reports the problem)."""
  try:
    kind, parts = parse_spec(spec)
  except InputPipelineError:
    return spec
  if kind == "tfds":
    return spec
  # A file on object storage is read from a local copy (the readers below take local files).
  path = storage.local_copy(parts[0]) if storage.is_remote(parts[0]) else os.path.abspath(os.path.expanduser(parts[0]))
  return ":".join([kind, path, *parts[1:]]) if spec.startswith(f"{kind}:") else path


class Source:
  """One parsed spec: kind, files (or a TFDS dataset) and the field(s) holding text."""

  def __init__(self, spec: str):
    self.spec = spec
    self.kind, parts = parse_spec(spec)
    if self.kind == "tfds":
      self.tfds_name, self.tfds_split, self.field = parts
      self.paths = []
      return
    pattern = parts[0]
    self.field = parts[1] if self.kind == "jsonl" else None
    self.columns = parts[1].split(",") if self.kind == "tsv" else None
    if self.columns is not None and not all(self.columns):
      raise InputPipelineError(f"bad source spec {spec!r}: empty column name")
    if not glob.has_magic(pattern):
      if not os.path.isfile(pattern):
        raise InputPipelineError(f"{pattern}: no such file (source {spec!r}; a source is {SPEC_FORMS})")
      self.paths = [pattern]
    else:
      self.paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
      if not self.paths:
        raise InputPipelineError(f"{pattern}: glob matches no files (source {spec!r})")

  def fingerprint(self) -> list:
    """What the cache key depends on: file names, sizes and mtimes (or the TFDS version)."""
    if self.kind == "tfds":
      data_source = self._tfds_source()
      info = getattr(data_source, "dataset_info", None)
      return [self.spec, len(data_source), str(getattr(info, "version", "")),
              str(getattr(info, "data_dir", ""))]
    return [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in self.paths]

  def texts(self, counts: collections.Counter) -> Iterator[str]:
    """Yields the non-blank texts of this source, counting skipped lines in `counts`."""
    if self.kind == "tfds":
      texts = self._tfds_texts(counts)
    else:
      texts = itertools.chain.from_iterable(self._file_texts(p, counts) for p in self.paths)
    num_texts = 0
    for num_texts, text in enumerate(texts, 1):
      yield text
    counts["texts_read"] += num_texts
    if not num_texts:
      where = self.paths[0] if len(self.paths) == 1 else self.spec
      raise InputPipelineError(f"{where}: empty corpus, no non-blank text (source {self.spec!r})")

  def _file_texts(self, path, counts):
    try:
      if self.kind == "text":
        yield from (line for line in decoded_lines(path, counts) if line.strip())
      elif self.kind == "jsonl":
        yield from self._jsonl_texts(path, counts)
      else:
        yield from self._tsv_texts(path, counts)
    except (OSError, EOFError) as e:  # e.g. a truncated or fake .gz file.
      raise InputPipelineError(f"{path}: cannot read: {e}") from None

  def _jsonl_texts(self, path, counts):
    for line in decoded_lines(path, counts):
      if not line.strip():
        continue
      try:
        text = json.loads(line)[self.field]
      except (ValueError, KeyError, TypeError, IndexError):
        counts["malformed_lines"] += 1
        continue
      if not isinstance(text, str):
        counts["malformed_lines"] += 1
      elif text.strip():
        yield text

  def _tsv_texts(self, path, counts):
    lines = (line for line in decoded_lines(path, counts) if line.strip())
    rows = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, None)
    if header is None:
      return  # Reported as an empty corpus by texts().
    missing = [c for c in self.columns if c not in header]
    if missing:
      raise InputPipelineError(f"{path}: no column(s) {missing} in header {header}")
    columns = [header.index(c) for c in self.columns]
    for row in rows:
      if len(row) <= max(columns):
        counts["malformed_lines"] += 1
        continue
      yield from (row[c] for c in columns if row[c].strip())

  def _tfds_source(self):
    return open_tfds(self.tfds_name, self.tfds_split, InputPipelineError, where=self.spec)

  def _tfds_texts(self, counts):
    data_source = self._tfds_source()
    if len(data_source) == 0:
      raise InputPipelineError(f"{self.spec}: empty corpus, the split has no records")
    # One record at a time: the batched `__getitems__` would save little next to decoding
    # and tokenizing, and tfds.testing.mock_data (4.9) breaks it, which would leave this
    # path untested.
    for index in range(len(data_source)):
      record = data_source[index]
      if self.field not in record:
        raise InputPipelineError(
            f"{self.spec}: records have no field {self.field!r}, only {sorted(record)}")
      text = record[self.field]
      if isinstance(text, np.ndarray):
        text = text.item()
      if isinstance(text, bytes):
        try:
          text = text.decode("utf-8")
        except UnicodeDecodeError:
          counts["undecodable_lines"] += 1
          continue
      if text.strip():
        yield text


def decoded_lines(path: str, counts: collections.Counter) -> Iterator[str]:
  """Lines of a (possibly gzipped) file, decoded one at a time so one bad line is skipped."""
  with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
    for raw in f:
      try:
        yield raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError:
        counts["undecodable_lines"] += 1


def check_sources(sources: Sequence[str]) -> None:
  """Raises InputPipelineError for a malformed spec or a file that does not exist, reading nothing."""
  if not sources:
    raise InputPipelineError("no data sources given (config.data.sources is empty)")
  for spec in sources:
    Source(spec)


def open_tfds(name: str, split: str, error: type, data_dir: Optional[str] = None, where: Optional[str] = None):
  """`tfds.data_source(name, split=split)` (array_record, no TensorFlow needed; the dataset must be
  prepared). A dataset that cannot be opened raises `error`, one line naming `where` (default
  NAME:SPLIT)."""
  import tensorflow_datasets as tfds  # Imported only when a TFDS dataset is read.
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, try_gcs=False)
  except Exception as e:  # TFDS raises many kinds; the first line of each is the message.
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise error(f"{where or f'{name}:{split}'}: cannot open TFDS dataset: {first_line}") from None
