"""The input files of `predict` and `embed`: rows of text from a table, JSON lines, text or stdin.

  with InputRows("reviews.tsv", PAIR_COLUMNS) as rows:
    for row in rows:            # Row(line, texts) or BadRow(line, error), in file order
      ...

The format is the file's extension:
  .tsv              a header row, then tab-separated fields (no quoting, as GLUE files)
  .csv              a header row, then comma-separated fields with standard CSV quoting
  .jsonl, .json     one JSON object per line
  .txt, - (stdin)   one text per line, or a tab-separated pair (`text_fields` says how many)

A table's text columns are `text_columns` when given, else the first of `candidates` (tuples of
column names) whose names the header (JSON lines: the first object) all has. A row that cannot
be used is a BadRow naming its line: a missing column, a wrong number of fields, bytes that are
not UTF-8, a line that is not a JSON object or a value that is not a string; an empty line of a
text input is one too (it keeps the rows and the lines aligned). Blank lines of tables are
skipped. A problem with the whole input (unknown extension, no such file, no header, no text
column) raises InputError before any row is read.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from distilbert_jax import errors

# The text columns `finetune` reads: the user's own table (tasks/defaults.TEXT_COLUMNS) and the
# GLUE tasks' files (tasks/glue_tasks.TASKS), pairs before single texts.
PAIR_COLUMNS = (("text_a", "text_b"), ("sentence1", "sentence2"), ("question1", "question2"),
                ("premise", "hypothesis"), ("question", "sentence"), ("#1 String", "#2 String"),
                ("text",), ("text_a",), ("sentence",))
# Extractive question answering (SQuAD's fields).
QA_COLUMNS = (("question", "context"),)
# One text per row: sentence embeddings.
SENTENCE_COLUMNS = (("text",), ("sentence",))

STDIN = "-"
FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "text"}


class InputError(errors.Error, ValueError):
  """An input that cannot be read at all; the message names it."""


@dataclasses.dataclass(frozen=True)
class Row:
  line: int                # 1-based line number in the input (a CSV row's last line)
  texts: tuple[str, ...]   # one text, or a pair


@dataclasses.dataclass(frozen=True)
class BadRow:
  line: int
  error: str


def input_format(path: str) -> str:
  """"tsv", "csv", "jsonl" or "text" by the extension; "-" is text on stdin."""
  if path == STDIN:
    return "text"
  suffix = Path(path).suffix.lower()
  if suffix not in FORMATS:
    raise InputError(f"{path}: unknown input type {suffix or '(no extension)'!r}; use .tsv, .csv, .jsonl, "
                     f".json, .txt or - (stdin)")
  return FORMATS[suffix]


def check_input(path: str) -> str:
  """The input's format, after checking that it can be opened (before a model is loaded)."""
  kind = input_format(path)
  if path != STDIN and not Path(path).is_file():
    raise InputError(f"{path}: no such file")
  return kind


def _not_utf8(text: str) -> bool:
  # Undecodable bytes come through errors="surrogateescape" as lone surrogates U+DC80..U+DCFF.
  return any("\udc80" <= c <= "\udcff" for c in text)


class InputRows:
  """The rows of one input, read lazily; a context manager that closes the file.

  candidates: the column-name tuples tables may use (see the module docstring); text_columns:
  these columns instead. text_fields: the tab-separated fields a text line may have ((1, 2): a
  text or a pair; (2,): exactly a pair); None: the whole line is one text.
  """

  def __init__(self, path: str, candidates: Sequence[tuple[str, ...]], *,
               text_columns: Optional[Sequence[str]] = None, text_fields: Optional[Sequence[int]] = (1, 2)):
    self.path, self.format = path, check_input(path)
    self.name = "<stdin>" if path == STDIN else path
    self.candidates = [tuple(text_columns)] if text_columns else [tuple(c) for c in candidates]
    self.text_fields = tuple(text_fields) if text_fields else None
    # A table's text columns: chosen from its header (JSON lines: the first object) unless there
    # is no choice, so that a JSON line without them is a bad row, not a bad file.
    self.columns: Optional[tuple[str, ...]] = None
    if self.format == "jsonl" and len(self.candidates) == 1:
      self.columns = self.candidates[0]
    if path == STDIN:
      self._file = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", newline="")
    else:
      self._file = open(path, encoding="utf-8", errors="surrogateescape", newline="")

  def __enter__(self) -> "InputRows":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    if self.path == STDIN:
      self._file.detach()  # stdin stays open for the rest of the process
    else:
      self._file.close()

  def __iter__(self) -> Iterator[Union[Row, BadRow]]:
    return {"tsv": self._table, "csv": self._table, "jsonl": self._json_lines, "text": self._text}[self.format]()

  def _choose_columns(self, names: Sequence[str], where: str) -> tuple[str, ...]:
    for columns in self.candidates:
      if all(c in names for c in columns):
        return columns
    wanted = " or ".join("/".join(c) for c in self.candidates)
    raise InputError(f"{self.name}: {where} has no text column {wanted} (found {', '.join(names) or 'none'})")

  def _lines(self) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline); a byte-order mark dropped from the first."""
    for number, line in enumerate(self._file, 1):
      line = line.rstrip("\r\n")
      yield number, line[1:] if number == 1 and line.startswith("\ufeff") else line

  def _text(self) -> Iterator[Union[Row, BadRow]]:
    for number, line in self._lines():
      if _not_utf8(line):
        yield BadRow(number, "not UTF-8")
      elif not line.strip():
        yield BadRow(number, "empty line")
      elif self.text_fields is None:
        yield Row(number, (line,))
      else:
        fields = tuple(line.split("\t"))
        if len(fields) not in self.text_fields:
          expected = " or ".join(map(str, self.text_fields))
          yield BadRow(number, f"expected {expected} tab-separated field(s), found {len(fields)}")
        else:
          yield Row(number, fields)

  def _table(self) -> Iterator[Union[Row, BadRow]]:
    if self.format == "tsv":
      records = ((number, line.split("\t")) for number, line in self._lines())
    else:
      reader = csv.reader(self._file)
      records = ((reader.line_num, row) for row in reader)
    header = None
    for number, fields in records:
      if not fields or fields == [""]:
        continue
      if header is None:
        if number == 1 and fields[0].startswith("\ufeff"):
          fields[0] = fields[0][1:]
        header = [f.strip() for f in fields]
        self.columns = self._choose_columns(header, "the header")
        index = [header.index(c) for c in self.columns]
        continue
      if any(_not_utf8(f) for f in fields):
        yield BadRow(number, "not UTF-8")
      elif len(fields) != len(header):
        yield BadRow(number, f"expected {len(header)} fields as the header, found {len(fields)}")
      else:
        yield Row(number, tuple(fields[i] for i in index))
    if header is None:
      raise InputError(f"{self.name}: empty file, no header row")

  def _json_lines(self) -> Iterator[Union[Row, BadRow]]:
    for number, line in self._lines():
      if not line.strip():
        continue
      if _not_utf8(line):
        yield BadRow(number, "not UTF-8")
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        yield BadRow(number, f"not JSON: {e.msg}")
        continue
      if not isinstance(record, dict):
        yield BadRow(number, f"not a JSON object but {type(record).__name__}")
        continue
      if self.columns is None:
        self.columns = self._choose_columns(list(record), f"line {number}")
      missing = [c for c in self.columns if c not in record]
      wrong = [c for c in self.columns if c in record and not isinstance(record[c], str)]
      if missing:
        yield BadRow(number, f"no field {missing[0]!r}")
      elif wrong:
        yield BadRow(number, f"field {wrong[0]!r} is {type(record[wrong[0]]).__name__}, not a string")
      else:
        yield Row(number, tuple(record[c] for c in self.columns))


def report_bad_row(name: str, row: BadRow) -> None:
  """One line on stderr: FILE:LINE: the problem."""
  print(f"distilbert-jax: {name}:{row.line}: {row.error}; skipped", file=sys.stderr, flush=True)
