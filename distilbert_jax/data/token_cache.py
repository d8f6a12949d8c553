"""Tokenize a text corpus once into an on-disk, memory-mapped token cache.

This replaces the original recipe's scripts/binarized_data.py (transformers'
examples/research_projects/distillation), which pickled the whole corpus as an in-memory list
of arrays and cast ids to uint16, corrupting every id above 65,535.

Sources are spec strings (the config field `config.data.sources`):

  PATH or GLOB             a plain path: the same as text:PATH
  text:GLOB                one text per line, blank lines skipped; `.gz` read transparently
  jsonl:GLOB:FIELD         JSON lines, the string value of FIELD is the text (`.gz` too)
  tsv:PATH:COL1,COL2       tab-separated with a header row, read like GLUE files (QUOTE_NONE);
                           each chosen column of each row is one text
  tfds:NAME:SPLIT:FIELD    `tfds.data_source` (array_record, no TensorFlow needed), e.g.
                           tfds:wikipedia/20230601.en:train:text; the dataset must already be
                           prepared in the TFDS data dir (TFDS_DATA_DIR), nothing is downloaded

Sequences follow binarized_data.py and train.py of the original: [CLS] text [SEP]; a text
longer than max_length is cut into chunks of max_length - 2 tokens, each re-framed with
[CLS]/[SEP]; sequences shorter than `min_length` (default 12: "11 tokens or fewer are
dropped") and sequences at least half [UNK] are dropped. With `pack=True` a sentence corpus
is packed instead: [CLS] s1 [SEP] s2 [SEP] ... up to max_length; the [UNK] filter then applies
to each sentence and `min_length` to each packed sequence.

Bad input policy:
  * a bad spec, a missing file, a glob matching nothing, an unreadable or empty source, a TSV
    column or TFDS dataset that does not exist, a tokenizer whose vocabulary size differs from
    the expected one, or no sequence left after filtering: `InputPipelineError` (an errors.Error and a ValueError)
    with one line naming the source or file and the problem;
  * a line that is not UTF-8, or a malformed JSON line / TSV row: skipped and counted
    (`undecodable_lines`, `malformed_lines` in `TokenCache.stats`, also logged).

Layout of one cache, `cache_dir/<key>/`: tokens.npy (flat ids: uint16 when the vocabulary has
at most 65,536 entries, else int32), offsets.npy (int64, num_sequences + 1), metadata.json.
The key hashes the sources (with file sizes and mtimes), the tokenizer files and the settings,
so a changed input or setting builds a new cache. A build writes into a temporary directory
that is renamed into place only when complete, so a killed build never leaves a usable half
cache (its `.KEY.tmp-*` directory may be deleted by hand). Several processes on a shared
filesystem: call `build_token_cache` on process 0 first, then a barrier, then on the others,
which only read; two concurrent builders are safe too (the second rename loses and is dropped).
"""
from __future__ import annotations

import collections
import csv
import glob
import gzip
import hashlib
import itertools
import json
import os
import time
from typing import Iterator, Sequence

from absl import logging
import numpy as np
import tokenizers

from distilbert_jax import atomic, errors

FORMAT_VERSION = 1
_TEXTS_PER_ENCODE = 16_384  # encode_batch parallelises over a batch in Rust, on every core.
_SPECIAL_TOKENS = ("cls", "sep", "pad", "mask", "unk")
# What a build reports (TokenCache.stats): texts read, lines skipped, sequences dropped and kept.
_COUNT_NAMES = ("texts_read", "undecodable_lines", "malformed_lines",
                "empty_after_tokenization", "long_texts_split", "dropped_too_short",
                "dropped_mostly_unk", "sequences", "tokens")


class InputPipelineError(errors.Error, ValueError):
  """A one-line problem with the training data, a source spec or the tokenizer."""


# ------------------------------------------------------------------------------------------
# Sources.
# ------------------------------------------------------------------------------------------
SPEC_FORMS = "a text file, text:GLOB, jsonl:GLOB:FIELD, tsv:PATH:COL1,COL2 or tfds:NAME:SPLIT:FIELD"


def _parse_spec(spec: str) -> tuple[str, list[str]]:
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
    kind, parts = _parse_spec(spec)
  except InputPipelineError:
    return spec
  if kind == "tfds":
    return spec
  path = os.path.abspath(os.path.expanduser(parts[0]))
  return ":".join([kind, path, *parts[1:]]) if spec.startswith(f"{kind}:") else path


class _Source:
  """One parsed spec: kind, files (or a TFDS dataset) and the field(s) holding text."""

  def __init__(self, spec: str):
    self.spec = spec
    self.kind, parts = _parse_spec(spec)
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
        yield from (line for line in _decoded_lines(path, counts) if line.strip())
      elif self.kind == "jsonl":
        yield from self._jsonl_texts(path, counts)
      else:
        yield from self._tsv_texts(path, counts)
    except (OSError, EOFError) as e:  # e.g. a truncated or fake .gz file.
      raise InputPipelineError(f"{path}: cannot read: {e}") from None

  def _jsonl_texts(self, path, counts):
    for line in _decoded_lines(path, counts):
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
    lines = (line for line in _decoded_lines(path, counts) if line.strip())
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
    import tensorflow_datasets as tfds  # Imported only when a tfds: source is used.
    try:
      return tfds.data_source(self.tfds_name, split=self.tfds_split, try_gcs=False)
    except Exception as e:  # TFDS raises many kinds; the first line of each is the message.
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise InputPipelineError(f"{self.spec}: cannot open TFDS dataset: {first_line}") from None

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


def _decoded_lines(path: str, counts: collections.Counter) -> Iterator[str]:
  """Lines of a (possibly gzipped) file, decoded one at a time so one bad line is skipped."""
  with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
    for raw in f:
      try:
        yield raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError:
        counts["undecodable_lines"] += 1


# ------------------------------------------------------------------------------------------
# Tokenizer.
# ------------------------------------------------------------------------------------------
class _Tokenizer:
  """A Hugging Face fast tokenizer from a local directory, with its special token ids."""

  def __init__(self, tokenizer_dir: str, expected_vocab_size: int | None = None):
    path = os.path.join(tokenizer_dir, "tokenizer.json")
    if not os.path.isfile(path):
      raise InputPipelineError(f"{path}: no such file (a fast tokenizer directory is needed)")
    self.tokenizer = tokenizers.Tokenizer.from_file(path)
    # tokenizer.json files saved for fine-tuning often truncate and pad (MiniLM: 128, fixed);
    # chunking and padding are ours to do.
    self.tokenizer.no_truncation()
    self.tokenizer.no_padding()
    self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
    if expected_vocab_size is not None and self.vocab_size != expected_vocab_size:
      raise InputPipelineError(
          f"{path}: vocabulary size {self.vocab_size} does not match the expected "
          f"{expected_vocab_size}")
    digest = hashlib.sha256()
    names = {f"{t}_token": f"[{t.upper()}]" for t in _SPECIAL_TOKENS}  # BERT's names.
    map_path = os.path.join(tokenizer_dir, "special_tokens_map.json")
    for file_path in (path, map_path):
      if os.path.isfile(file_path):
        with open(file_path, "rb") as f:
          digest.update(f.read())
    if os.path.isfile(map_path):
      with open(map_path, encoding="utf-8") as f:
        for key, value in json.load(f).items():
          if key in names:
            names[key] = value["content"] if isinstance(value, dict) else value
    self.fingerprint = digest.hexdigest()
    self.special_ids = {}
    for kind in _SPECIAL_TOKENS:
      token_id = self.tokenizer.token_to_id(names[f"{kind}_token"])
      if token_id is None:
        raise InputPipelineError(f"{path}: no {kind} token {names[f'{kind}_token']!r}")
      self.special_ids[kind] = token_id


def check_sources(sources: Sequence[str]) -> None:
  """Raises InputPipelineError for a malformed spec or a file that does not exist, reading nothing."""
  if not sources:
    raise InputPipelineError("no data sources given (config.data.sources is empty)")
  for spec in sources:
    _Source(spec)


def tokenizer_vocab_size(tokenizer_dir: str) -> int:
  """The vocabulary size of the fast tokenizer in `tokenizer_dir` (its tokenizer.json)."""
  return _Tokenizer(tokenizer_dir).vocab_size


# ------------------------------------------------------------------------------------------
# Sequences: chunk, frame, filter, pack.
# ------------------------------------------------------------------------------------------
class _SequenceWriter:
  """Turns token id lists into framed sequences and appends them to tokens/offsets files."""

  def __init__(self, directory, tokenizer, *, max_length, min_length, pack, counts):
    self.tokens = _NpyAppender(os.path.join(directory, "tokens.npy"),
                               _token_dtype(tokenizer.vocab_size))
    self.offsets = _NpyAppender(os.path.join(directory, "offsets.npy"), np.int64)
    self.offsets.append(np.zeros(1, np.int64))
    self.cls, self.sep, self.unk = (tokenizer.special_ids[k] for k in ("cls", "sep", "unk"))
    self.max_length, self.min_length, self.pack, self.counts = max_length, min_length, pack, counts
    self.num_tokens = 0
    self.open_pack: list[np.ndarray] = []  # Sentences of the packed sequence being filled,
    self.open_length = 1  # and its length so far: [CLS] plus each sentence and its [SEP].
    self.closed_packs: list[np.ndarray] = []  # Contents waiting for one _write per batch.

  def add(self, id_lists: Sequence[list[int]]):
    """Adds the tokenized texts of one encode batch (ids without special tokens)."""
    lengths = np.fromiter(map(len, id_lists), np.int64, len(id_lists))
    flat = np.fromiter(itertools.chain.from_iterable(id_lists), np.int64, int(lengths.sum()))
    self.counts["empty_after_tokenization"] += int(np.sum(lengths == 0))
    # Pieces: consecutive runs of at most max_length - 2 content tokens (train.py's chunks).
    room = self.max_length - 2
    pieces_per_text = -(-lengths // room)
    self.counts["long_texts_split"] += int(np.sum(pieces_per_text > 1))
    text_of_piece = np.repeat(np.arange(len(lengths)), pieces_per_text)
    first_piece = np.cumsum(pieces_per_text) - pieces_per_text
    piece_in_text = np.arange(text_of_piece.size) - first_piece[text_of_piece]
    text_start = np.cumsum(lengths) - lengths
    piece_start = text_start[text_of_piece] + piece_in_text * room
    piece_length = np.minimum(room, lengths[text_of_piece] - piece_in_text * room)
    is_unk = np.append(flat == self.unk, False).astype(np.int64)
    unk_count = np.add.reduceat(is_unk, piece_start) if piece_start.size else piece_start
    # train.py drops a sequence when unk / length >= 0.5, length counting [CLS] and [SEP].
    mostly_unk = 2 * unk_count >= piece_length + 2
    if self.pack:  # [UNK] filter per sentence here, min_length per packed sequence later.
      self.counts["dropped_mostly_unk"] += int(np.sum(mostly_unk))
      kept = ~mostly_unk
      for start, length in zip(piece_start[kept].tolist(), piece_length[kept].tolist()):
        if self.open_length + length + 1 > self.max_length:
          self._close_pack()
        self.open_pack.append(flat[start:start + length])
        self.open_length += length + 1
      self._write_packs()
      return
    # Filters in train.py's order: too short first, then mostly [UNK].
    too_short = self._too_short(piece_length)
    self.counts["dropped_too_short"] += int(np.sum(too_short))
    self.counts["dropped_mostly_unk"] += int(np.sum(mostly_unk & ~too_short))
    keep = ~too_short & ~mostly_unk
    self._write(flat, piece_start[keep], piece_length[keep])

  def _too_short(self, content_length):
    return content_length + 2 < self.min_length

  def _close_pack(self):
    if not self.open_pack:
      return
    content = np.full(self.open_length - 2, self.sep, np.int64)
    position = 0
    for piece in self.open_pack:  # s1 [SEP] s2 [SEP] ... sn; _write adds [CLS] and the last [SEP].
      content[position:position + piece.size] = piece
      position += piece.size + 1
    self.open_pack, self.open_length = [], 1
    if self._too_short(content.size):
      self.counts["dropped_too_short"] += 1
    else:
      self.closed_packs.append(content)

  def _write_packs(self):
    if self.closed_packs:
      lengths = np.array([c.size for c in self.closed_packs])
      self._write(np.concatenate(self.closed_packs), np.cumsum(lengths) - lengths, lengths)
      self.closed_packs = []

  def _write(self, flat, starts, content_lengths):
    """Appends [CLS] flat[start:start+length] [SEP] for each (start, length)."""
    if not starts.size:
      return
    seq_lengths = content_lengths + 2
    seq_ends = np.cumsum(seq_lengths)
    out = np.empty(int(seq_ends[-1]), np.int64)
    out[seq_ends - seq_lengths] = self.cls
    out[seq_ends - 1] = self.sep
    is_content = np.ones(out.size, bool)
    is_content[seq_ends - seq_lengths] = is_content[seq_ends - 1] = False
    content_start = np.cumsum(content_lengths) - content_lengths  # Where each goes in out.
    shift = np.repeat(starts - content_start, content_lengths)
    out[is_content] = flat[shift + np.arange(shift.size)]
    self.tokens.append(out)
    self.offsets.append(self.num_tokens + seq_ends)
    self.num_tokens += out.size
    self.counts["sequences"] += starts.size

  def close(self):
    if self.pack:
      self._close_pack()
      self._write_packs()
    self.tokens.close()
    self.offsets.close()


class _NpyAppender:
  """Writes a 1-D .npy file in pieces: a header sized for any length, rewritten at the end."""

  def __init__(self, path: str, dtype):
    self.path, self.dtype, self.size = path, np.dtype(dtype), 0
    self.file = open(path, "wb")
    self.header_size = self._write_header(np.iinfo(np.int64).max)

  def _write_header(self, length: int) -> int:
    self.file.seek(0)
    np.lib.format.write_array_header_1_0(self.file, {
        "descr": np.lib.format.dtype_to_descr(self.dtype),
        "fortran_order": False,
        "shape": (length,),
    })
    return self.file.tell()

  def append(self, values: np.ndarray):
    # The original corruption: ids > 65,535 silently wrapped by a uint16 cast. Refuse instead.
    if values.size and np.issubdtype(self.dtype, np.integer):
      info = np.iinfo(self.dtype)
      if values.min() < info.min or values.max() > info.max:
        raise OverflowError(f"{self.path}: values outside {self.dtype} range")
    self.file.write(np.ascontiguousarray(values, self.dtype).tobytes())
    self.size += values.size

  def close(self):
    if self._write_header(self.size) != self.header_size:
      raise RuntimeError(f"{self.path}: .npy header changed size")  # Cannot happen for 1-D.
    self.file.close()


def _token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16 if vocab_size <= 65_536 else np.int32)


# ------------------------------------------------------------------------------------------
# The cache.
# ------------------------------------------------------------------------------------------
class TokenCache:
  """A built token cache, memory-mapped: sequence i is tokens[offsets[i]:offsets[i + 1]]."""

  def __init__(self, path: str):
    self.path = path
    with open(os.path.join(path, "metadata.json"), encoding="utf-8") as f:
      self.metadata = json.load(f)
    self.tokens = np.load(os.path.join(path, "tokens.npy"), mmap_mode="r")
    self.offsets = np.load(os.path.join(path, "offsets.npy"), mmap_mode="r")
    if self.offsets[-1] != self.tokens.size or self.metadata["format_version"] != FORMAT_VERSION:
      raise InputPipelineError(f"{path}: inconsistent token cache")
    self.lengths = np.diff(self.offsets).astype(np.int32)
    self.key = self.metadata["key"]
    self.vocab_size = self.metadata["vocab_size"]
    self.max_length = self.metadata["max_length"]
    ids = self.metadata["special_ids"]
    self.cls_id, self.sep_id, self.pad_id = ids["cls"], ids["sep"], ids["pad"]
    self.mask_id, self.unk_id = ids["mask"], ids["unk"]
    # Ids that MLM never masks and whose smoothed probability is 0 (original train.py).
    self.special_ids = tuple(sorted(set(ids.values())))
    self.stats = dict(self.metadata["counts"])

  @property
  def num_sequences(self) -> int:
    return self.lengths.size

  def __len__(self) -> int:
    return self.num_sequences

  def __getitem__(self, index: int) -> np.ndarray:
    index = range(self.num_sequences)[index]  # Negative indices; IndexError past the end.
    return np.asarray(self.tokens[self.offsets[index]:self.offsets[index + 1]], np.int32)


def build_token_cache(sources: Sequence[str], tokenizer_dir: str, cache_dir: str, *,
                      max_length: int, min_length: int = 12, pack: bool = False,
                      expected_vocab_size: int | None = None) -> TokenCache:
  """Returns the token cache for these sources and settings, building it when missing.

  Args:
    sources: spec strings, see the module docstring.
    tokenizer_dir: a directory with tokenizer.json (and optionally special_tokens_map.json).
    cache_dir: parent directory; the cache lives in cache_dir/<key>.
    max_length: the longest sequence, [CLS] and [SEP] included (512 in the original).
    min_length: shorter sequences are dropped (12: the original drops 11 tokens or fewer).
    pack: pack sentences into sequences of up to max_length tokens.
    expected_vocab_size: if given, the tokenizer's vocabulary size must equal it.
  """
  if not sources:
    raise InputPipelineError("no data sources given (config.data.sources is empty)")
  if max_length < 3 or min_length > max_length:
    raise InputPipelineError(f"bad lengths: max_length={max_length}, min_length={min_length}")
  parsed = [_Source(spec) for spec in sources]
  tokenizer = _Tokenizer(tokenizer_dir, expected_vocab_size)
  settings = {
      "format_version": FORMAT_VERSION,
      "sources": list(sources),
      "source_files": [source.fingerprint() for source in parsed],
      "tokenizer_sha256": tokenizer.fingerprint,
      "max_length": max_length,
      "min_length": min_length,
      "pack": pack,
  }
  key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
  final_path = os.path.join(cache_dir, key)
  if os.path.isfile(os.path.join(final_path, "metadata.json")):
    logging.info("Token cache %s reused.", final_path)
    return TokenCache(final_path)

  # The directories this build creates, outermost first: a failed build takes them away again,
  # so that bad data leaves no trace (not even an empty WORKDIR/token_cache).
  created = []
  directory = os.path.abspath(cache_dir)
  while not os.path.exists(directory):
    created.insert(0, directory)
    directory = os.path.dirname(directory)
  os.makedirs(cache_dir, exist_ok=True)
  try:
    with atomic.directory(final_path, replace=False) as tmp_path:
      _build(str(tmp_path), parsed, tokenizer, settings, key, tokenizer_dir, max_length, min_length, pack, sources)
    if not os.path.isfile(os.path.join(final_path, "metadata.json")):
      raise InputPipelineError(f"{final_path}: exists but is not a complete token cache, delete it")
  except BaseException:
    for directory in reversed(created):
      try:
        os.rmdir(directory)  # only while empty: another process may have filled it meanwhile
      except OSError:
        break
    raise
  cache = TokenCache(final_path)
  logging.info("Token cache %s built: %s", final_path, cache.stats)
  if cache.stats["undecodable_lines"] or cache.stats["malformed_lines"]:
    logging.warning("Skipped %d lines that are not UTF-8 and %d malformed lines or rows.",
                    cache.stats["undecodable_lines"], cache.stats["malformed_lines"])
  return cache


def _build(tmp_path, parsed, tokenizer, settings, key, tokenizer_dir, max_length, min_length, pack, sources):
  """Writes the cache's files and its metadata.json (last: a cache without it is incomplete)
  into the empty directory tmp_path."""
  started = time.time()
  counts = collections.Counter(dict.fromkeys(_COUNT_NAMES, 0))
  writer = _SequenceWriter(tmp_path, tokenizer, max_length=max_length,
                           min_length=min_length, pack=pack, counts=counts)
  texts = itertools.chain.from_iterable(source.texts(counts) for source in parsed)
  while batch := list(itertools.islice(texts, _TEXTS_PER_ENCODE)):
    encodings = tokenizer.tokenizer.encode_batch_fast(batch, add_special_tokens=False)
    writer.add([e.ids for e in encodings])
  writer.close()
  counts["tokens"] = writer.num_tokens
  if not counts["sequences"]:
    raise InputPipelineError(
        f"{', '.join(sources)}: empty corpus, no sequence left after filtering ({dict(counts)})")
  metadata = dict(settings, key=key, tokenizer_dir=os.path.abspath(tokenizer_dir),
                  vocab_size=tokenizer.vocab_size, special_ids=tokenizer.special_ids,
                  token_dtype=_token_dtype(tokenizer.vocab_size).name, counts=dict(counts),
                  build_seconds=round(time.time() - started, 3))
  with open(os.path.join(tmp_path, "metadata.json"), "w", encoding="utf-8") as f:
    json.dump(metadata, f, indent=1)


# ------------------------------------------------------------------------------------------
# Token counts for MLM smoothing (the original scripts/token_counts.py).
# ------------------------------------------------------------------------------------------
def count_tokens(cache: TokenCache) -> np.ndarray:
  """Occurrences of each id in the cache: [vocab_size] int64, read in bounded chunks."""
  counts = np.zeros(cache.vocab_size, np.int64)
  chunk = 1 << 24
  for start in range(0, cache.tokens.size, chunk):
    counts += np.bincount(cache.tokens[start:start + chunk], minlength=cache.vocab_size)
  return counts


def write_token_counts(cache: TokenCache, path: str) -> np.ndarray:
  """Writes count_tokens(cache) to `path` (.npy) atomically and returns the counts."""
  counts = count_tokens(cache)
  with atomic.writing(path, "wb") as f:
    np.save(f, counts)
  return counts
