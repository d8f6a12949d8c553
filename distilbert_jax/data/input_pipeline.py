"""Token batches for the distillation step, streamed from the on-disk token cache.

This module only batches a built cache (token_cache.TokenCache); it re-exports nothing of the
text side. The distillation job calls token_cache itself (check_sources, tokenizer_vocab_size,
build_token_cache) and this module for check_lengths and make_batch_iterator; fine-tuning
uses plan_epoch and check_lengths for its in-memory datasets.

Batching follows the original train.py's `group_by_size`, with static shapes for XLA:
  1. epoch e permutes the sequence indices with seed (seed, e);
  2. the permutation is cut into windows of `window_batches` global batches, each window is
     sorted by length and cut into global batches, so a batch holds sequences of similar
     length;
  3. each batch is padded to the smallest of `bucket_lengths` that fits its longest
     sequence (a handful of shapes, so a handful of compilations), and the batch order is
     shuffled with the same seed.
Every process computes the same plan and reads only its rows [i*B/P, (i+1)*B/P) of each
global batch. The plan is a function of (seed, epoch) alone, so the position in the stream is
one integer, the global batch index; the iterator state is that index (grain's own
`next_index`) plus a fingerprint of the settings it is valid for. Host memory is bounded: the
tokens stay memory-mapped and at most two epochs' plans (4 bytes a sequence each) are kept,
no dataset in RAM (the original pickled it and grew to 42 GB).
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Sequence

import grain
import numpy as np

from distilbert_jax import errors
from distilbert_jax.data import InputPipelineError
from distilbert_jax.data.token_cache import TokenCache

_STATE_FORMAT = 1


def check_lengths(data, max_positions: int, model: str) -> None:
  """data.max_length and data.bucket_lengths of a training config fit the position table of
  `model` (a position past its end has no embedding, and every output would be NaN)."""
  too_long = [f"data.max_length={data.max_length}"] if data.max_length > max_positions else []
  if any(b > max_positions for b in data.bucket_lengths):
    too_long.append(f"data.bucket_lengths={tuple(data.bucket_lengths)}")
  if too_long:
    raise errors.ConfigError(f"{' and '.join(too_long)}: longer than max_position_embeddings={max_positions} of "
                             f"{model}; set --config.data.max_length and every --config.data.bucket_lengths to at "
                             f"most {max_positions} (longer texts are truncated)")


def plan_epoch(lengths: np.ndarray, *, global_batch_size: int, bucket_lengths: Sequence[int],
               seed: int, epoch: int, shuffle: bool = True, drop_remainder: bool = True,
               window_batches: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """The global batches of one epoch, identical on every process.

  Args:
    lengths: [num_sequences] token count of each sequence.
    global_batch_size: sequences per global batch, B.
    bucket_lengths: the padded lengths a batch may have, ascending.
    seed, epoch: the epoch's shuffling is seeded by (seed, epoch).
    shuffle: permute the sequences and the batch order; if False the plan is still grouped
      by length (within windows of the original order) and deterministic.
    drop_remainder: drop the num_sequences % B sequences left over (a different random set
      each epoch); otherwise the last batch is filled with empty rows (index -1).
    window_batches: batches per length-sorting window; larger pads less, mixes less.

  Returns:
    batches: [num_batches, B] sequence indices, -1 for an empty row.
    batch_lengths: [num_batches] the padded length of each batch.
  """
  rng = np.random.default_rng([seed, epoch])
  num_sequences = lengths.size
  index_dtype = np.int32 if num_sequences < 2**31 else np.int64
  order = rng.permutation(num_sequences) if shuffle else np.arange(num_sequences)
  order = order.astype(index_dtype)
  if drop_remainder:
    order = order[:num_sequences // global_batch_size * global_batch_size]
  window = np.arange(order.size) // (global_batch_size * window_batches)
  order = order[np.lexsort((lengths[order], window))]  # Stable: ties keep their shuffled order.
  num_batches = -(-order.size // global_batch_size)
  batches = np.full(num_batches * global_batch_size, -1, index_dtype)
  batches[:order.size] = order
  batches = batches.reshape(num_batches, global_batch_size)
  longest = np.where(batches >= 0, lengths[batches], 0).max(axis=1, initial=0)
  bucket_lengths = np.asarray(bucket_lengths, np.int32)
  batch_lengths = bucket_lengths[np.searchsorted(bucket_lengths, longest)]
  if shuffle:
    batch_order = rng.permutation(num_batches)
    batches, batch_lengths = batches[batch_order], batch_lengths[batch_order]
  return batches, batch_lengths


def padding_efficiency(lengths: np.ndarray, batches: np.ndarray,
                       batch_lengths: np.ndarray) -> float:
  """Real tokens / padded tokens over the batches of a plan (1.0 means no padding)."""
  real = np.where(batches >= 0, lengths[batches], 0).sum()
  return float(real / (batches.shape[1] * batch_lengths.astype(np.int64).sum()))


class BatchIterator:
  """Infinite (or num_epochs) iterator over this process's share of each global batch.

  Yields {"input_ids": int32 [B / P, L], "attention_mask": int32 [B / P, L]}, L one of the
  bucket lengths. get_state() is a JSON-serializable dict; set_state() on an iterator built
  with the same settings (process count may differ) resumes with the batch that was next.
  """

  def __init__(self, cache: TokenCache, *, global_batch_size: int, bucket_lengths: Sequence[int],
               seed: int, process_index: int = 0, process_count: int = 1,
               drop_remainder: bool = True, shuffle: bool = True, num_epochs: int | None = None,
               window_batches: int = 64, num_threads: int = 2, prefetch_buffer_size: int = 8):
    bucket_lengths = tuple(int(b) for b in bucket_lengths)
    if not bucket_lengths or list(bucket_lengths) != sorted(set(bucket_lengths)) \
        or bucket_lengths[0] < 1:
      raise InputPipelineError(
          f"bucket_lengths must be ascending positive lengths, got {bucket_lengths}")
    if bucket_lengths[-1] < cache.max_length:
      raise InputPipelineError(
          f"largest bucket length {bucket_lengths[-1]} < the cache's max_length {cache.max_length}")
    if global_batch_size % process_count or not 0 <= process_index < process_count:
      raise InputPipelineError(
          f"global_batch_size {global_batch_size} must split evenly over {process_count} "
          f"processes (process_index {process_index})")
    self.cache = cache
    self.global_batch_size = global_batch_size
    self.per_process_batch_size = global_batch_size // process_count
    self.bucket_lengths = bucket_lengths
    self.seed, self.shuffle, self.drop_remainder = seed, shuffle, drop_remainder
    self.window_batches = window_batches
    self.num_epochs = num_epochs
    self._rows = slice(process_index * self.per_process_batch_size,
                       (process_index + 1) * self.per_process_batch_size)
    full_batches, remainder = divmod(cache.num_sequences, global_batch_size)
    self.batches_per_epoch = full_batches + int(remainder > 0 and not drop_remainder)
    if not self.batches_per_epoch:
      raise InputPipelineError(
          f"{cache.path}: {cache.num_sequences} sequences make no full global batch of "
          f"{global_batch_size}")
    self._plans = collections.OrderedDict()  # epoch -> plan, least recently used first.
    self._plans_lock = threading.Lock()
    # grain walks global batch indices 0, 1, 2, ... across epochs (repeat only sets the
    # length); threads assemble the next batches ahead while the accelerator computes.
    batch_indices = grain.MapDataset.range(self.batches_per_epoch).repeat(num_epochs)
    batches = batch_indices.map_with_index(lambda index, _: self._load_batch(index))
    self._dataset = batches.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))
    self._iterator = iter(self._dataset)

  def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(batches, batch_lengths) of one epoch, see plan_epoch; the last two used are kept."""
    with self._plans_lock:
      if epoch not in self._plans:
        self._plans[epoch] = plan_epoch(
            self.cache.lengths, global_batch_size=self.global_batch_size,
            bucket_lengths=self.bucket_lengths, seed=self.seed, epoch=epoch,
            shuffle=self.shuffle, drop_remainder=self.drop_remainder,
            window_batches=self.window_batches)
      self._plans.move_to_end(epoch)
      while len(self._plans) > 2:  # Prefetch threads may straddle an epoch boundary.
        self._plans.popitem(last=False)
      return self._plans[epoch]

  def _load_batch(self, global_index: int) -> dict[str, np.ndarray]:
    epoch, index_in_epoch = divmod(global_index, self.batches_per_epoch)
    batches, batch_lengths = self.plan(epoch)
    rows = batches[index_in_epoch, self._rows]
    length = int(batch_lengths[index_in_epoch])
    is_real = rows >= 0
    rows = np.where(is_real, rows, 0)
    row_lengths = np.where(is_real, self.cache.lengths[rows], 0)
    attention_mask = np.arange(length)[None, :] < row_lengths[:, None]
    token_index = (self.cache.offsets[rows][:, None] + np.arange(length)[None, :])[attention_mask]
    input_ids = np.full((rows.size, length), self.cache.pad_id, np.int32)
    input_ids[attention_mask] = self.cache.tokens[token_index]
    return {"input_ids": input_ids, "attention_mask": attention_mask.astype(np.int32)}

  def __iter__(self) -> BatchIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iterator)

  @property
  def _next_index(self) -> int:
    return int(self._iterator.get_state()["next_index"])

  def _fingerprint(self) -> dict[str, Any]:
    return {"cache_key": self.cache.key, "global_batch_size": self.global_batch_size,
            "bucket_lengths": list(self.bucket_lengths), "seed": self.seed,
            "shuffle": self.shuffle, "drop_remainder": self.drop_remainder,
            "window_batches": self.window_batches}

  def get_state(self) -> dict[str, Any]:
    """JSON-serializable position: the next global batch and the settings it belongs to."""
    epoch, index_in_epoch = divmod(self._next_index, self.batches_per_epoch)
    return {"format": _STATE_FORMAT, "next_batch": self._next_index, "epoch": epoch,
            "batch_in_epoch": index_in_epoch, **self._fingerprint()}

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues from a get_state() result (also after a JSON round trip)."""
    expected = dict(self._fingerprint(), format=_STATE_FORMAT)
    differ = sorted(k for k in expected if state.get(k) != expected[k])
    if differ:
      raise InputPipelineError(
          f"iterator state does not match this pipeline: "
          f"{', '.join(f'{k}={state.get(k)!r} vs {expected[k]!r}' for k in differ)}")
    self._iterator.set_state({"next_index": int(state["next_batch"])})

  def padding_efficiency(self, epoch: int | None = None) -> float:
    """Real tokens / padded tokens over one epoch's global batches (default: the current)."""
    epoch = self._next_index // self.batches_per_epoch if epoch is None else epoch
    return padding_efficiency(self.cache.lengths, *self.plan(epoch))

  @property
  def stats(self) -> dict[str, Any]:
    state = self.get_state()
    return {"epoch": state["epoch"], "batch_in_epoch": state["batch_in_epoch"],
            "batches_per_epoch": self.batches_per_epoch,
            "padding_efficiency": self.padding_efficiency(state["epoch"]),
            "num_sequences": self.cache.num_sequences, **self.cache.stats}

  def close(self) -> None:
    """Stops grain's prefetch threads."""
    self._iterator.close()


def make_batch_iterator(cache: TokenCache, *, global_batch_size: int,
                        bucket_lengths: Sequence[int], seed: int, process_index: int = 0,
                        process_count: int = 1, drop_remainder: bool = True,
                        shuffle: bool = True, num_epochs: int | None = None,
                        **options) -> BatchIterator:
  """This process's batches from `cache`, see BatchIterator.

  options: window_batches (64), num_threads (2), prefetch_buffer_size (8).
  """
  return BatchIterator(cache, global_batch_size=global_batch_size, bucket_lengths=bucket_lengths,
                       seed=seed, process_index=process_index, process_count=process_count,
                       drop_remainder=drop_remainder, shuffle=shuffle, num_epochs=num_epochs,
                       **options)
