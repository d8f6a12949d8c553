"""Token counts for MLM smoothing (the original recipe's scripts/token_counts.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from distilbert_jax import atomic

if TYPE_CHECKING:
  from distilbert_jax.data.token_cache import TokenCache


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
