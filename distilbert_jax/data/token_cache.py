"""Tokenize a text corpus once into an on-disk, memory-mapped token cache.

This replaces the original recipe's scripts/binarized_data.py (transformers'
examples/research_projects/distillation), which pickled the whole corpus as an in-memory list
of arrays and cast ids to uint16, corrupting every id above 65,535.

The stages, each in its own module: sources.py reads the texts of the source specs
(`config.data.sources`, the forms are listed there), tokenizer.py loads the fast tokenizer,
sequence_writer.py frames, filters and packs the ids and writes them, and this module ties
them into one cache and opens it. token_counts.py counts the ids of a built cache for MLM
smoothing. Callers import this module, not those: the distillation job (check_sources,
tokenizer_vocab_size, build_token_cache), the command line (write_token_counts) and
configuration.py (absolute_source), so the names they use from the other modules are
re-exported here. input_pipeline.py batches the cache this module builds.

Bad input: a bad spec, a missing, unreadable or empty source, a tokenizer whose vocabulary size
differs from the expected one, or no sequence left after filtering raise `InputPipelineError`
(an errors.Error and a ValueError) with one line naming the source or file and the problem;
undecodable and malformed lines are skipped and counted in `TokenCache.stats`, and logged.

Layout of one cache, `cache_dir/<key>/`: tokens.npy and offsets.npy (see sequence_writer.py)
and metadata.json. The key hashes the sources (with file sizes and mtimes), the tokenizer files
and the settings, so a changed input or setting builds a new cache. A build writes into a
temporary directory that is renamed into place only when complete, so a killed build never
leaves a usable half cache (its `.KEY.tmp-*` directory may be deleted by hand). Several
processes on a shared filesystem: call `build_token_cache` on process 0 first, then a barrier,
then on the others, which only read; two concurrent builders are safe too (the second rename
loses and is dropped). A `cache_dir` on object storage (gs://) works the same way: the cache is
built in a local directory, published there between storage.py's markers, and every process
memory-maps a local copy.
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import time
from typing import Sequence

from absl import logging
import numpy as np

from distilbert_jax import atomic, storage
from distilbert_jax.data import InputPipelineError
from distilbert_jax.data.sequence_writer import SequenceWriter, token_dtype
from distilbert_jax.data.sources import Source, absolute_source, check_sources
from distilbert_jax.data.token_counts import count_tokens, write_token_counts
from distilbert_jax.data.tokenizer import Tokenizer, tokenizer_vocab_size

FORMAT_VERSION = 1
_TEXTS_PER_ENCODE = 16_384  # encode_batch parallelises over a batch in Rust, on every core.
# What a build reports (TokenCache.stats): texts read, lines skipped, sequences dropped and kept.
_COUNT_NAMES = ("texts_read", "undecodable_lines", "malformed_lines",
                "empty_after_tokenization", "long_texts_split", "dropped_too_short",
                "dropped_mostly_unk", "sequences", "tokens")


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
                      expected_vocab_size: int | None = None, build_here: bool = True) -> TokenCache:
  """Returns the token cache for these sources and settings, building it when missing.

  Args:
    sources: spec strings, see the module docstring.
    tokenizer_dir: a directory with tokenizer.json (and optionally special_tokens_map.json).
    cache_dir: parent directory; the cache lives in cache_dir/<key>.
    max_length: the longest sequence, [CLS] and [SEP] included (512 in the original).
    min_length: shorter sequences are dropped (12: the original drops 11 tokens or fewer).
    pack: pack sentences into sequences of up to max_length tokens.
    expected_vocab_size: if given, the tokenizer's vocabulary size must equal it.
    build_here: False where another process builds the cache (on object storage this one then
      only reads it, and a cache without its completion marker is an error).
  """
  if not sources:
    raise InputPipelineError("no data sources given (config.data.sources is empty)")
  if max_length < 3 or min_length > max_length:
    raise InputPipelineError(f"bad lengths: max_length={max_length}, min_length={min_length}")
  parsed = [Source(spec) for spec in sources]
  tokenizer = Tokenizer(tokenizer_dir, expected_vocab_size)
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
  if storage.is_remote(cache_dir):
    return _remote_cache(cache_dir, key, build_here, lambda local_dir: build_token_cache(
        sources, tokenizer_dir, local_dir, max_length=max_length, min_length=min_length, pack=pack,
        expected_vocab_size=expected_vocab_size))
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


def _remote_cache(cache_dir: str, key: str, build_here: bool, build_local) -> TokenCache:
  """The cache `key` under the remote `cache_dir`, memory-mapped from a local copy (a bucket
  cannot be mapped): downloaded when published, else built locally (`build_local(local dir)`)
  and published with storage's markers."""
  uri = f"{cache_dir.rstrip('/')}/{key}"
  storage.check_complete(uri)
  if storage.is_complete_directory(uri):
    logging.info("Token cache %s reused.", uri)
    return TokenCache(storage.local_copy(uri))
  if not build_here:
    raise InputPipelineError(f"{uri}: the token cache is not there (the process that builds it failed?)")
  cache = build_local(os.path.join(storage.cache_root(), "token_cache"))
  storage.publish_directory(cache.path, uri, replace=False)
  logging.info("Token cache %s published.", uri)
  return cache


def _build(tmp_path, parsed, tokenizer, settings, key, tokenizer_dir, max_length, min_length, pack, sources):
  """Writes the cache's files and its metadata.json (last: a cache without it is incomplete)
  into the empty directory tmp_path."""
  started = time.time()
  counts = collections.Counter(dict.fromkeys(_COUNT_NAMES, 0))
  writer = SequenceWriter(tmp_path, tokenizer, max_length=max_length,
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
                  token_dtype=token_dtype(tokenizer.vocab_size).name, counts=dict(counts),
                  build_seconds=round(time.time() - started, 3))
  with open(os.path.join(tmp_path, "metadata.json"), "w", encoding="utf-8") as f:
    json.dump(metadata, f, indent=1)


__all__ = ["FORMAT_VERSION", "InputPipelineError", "TokenCache", "absolute_source", "build_token_cache",
           "check_sources", "count_tokens", "tokenizer_vocab_size", "write_token_counts"]
