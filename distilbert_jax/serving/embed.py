"""`distilbert-jax embed`: a sentence embedding for each input row, from tasks.embeddings.Encoder.

  distilbert-jax embed --model MODEL_DIR --input sentences.txt --out embeddings.npy

The inputs are predict's (serving/inputs.py): one text per line of a .txt file or stdin (the
whole line, tabs included), or a `text` or `sentence` column of a table. The embeddings are
Encoder.embed's, batch by batch in input order, so they equal Encoder.embed on the same
sentences. Outputs:
  .npy    float32 [rows, hidden], written atomically at the end; a bad row is a row of NaN
  .jsonl  (or stdout) {"embedding": [...]} a line, streamed chunk by chunk as predict's, a bad
          row an {"line": N, "error": ...} record
so the i-th embedding is always the i-th input row's.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from distilbert_jax import atomic, errors
from distilbert_jax.serving import inputs
from distilbert_jax.serving.predict import CHUNK_ROWS, JsonLinesOut, run_rows
from distilbert_jax.tasks import embeddings

OUTPUTS = (".npy", ".jsonl")


class NpyRows:
  """A sink of embedding records (predict.run_rows writes to it): their vectors, a NaN row for
  an error record, saved as one float32 [rows, hidden] .npy atomically by `save`."""

  def __init__(self, hidden: int):
    self.hidden, self.rows = hidden, []

  def write(self, records) -> None:
    for r in records:
      self.rows.append(r["embedding"] if "embedding" in r else np.full(self.hidden, np.nan, np.float32))

  def array(self) -> np.ndarray:
    return np.stack(self.rows).astype(np.float32) if self.rows else np.zeros((0, self.hidden), np.float32)

  def save(self, path: str) -> None:
    with atomic.writing(path, "wb") as f:
      np.save(f, self.array())


def embed_main(model_dir: str, input_path: str, out: Optional[str] = None, *, batch_size: int = 64,
               max_length: Optional[int] = None, text_columns: Optional[Sequence[str]] = None) -> tuple[int, int]:
  """`distilbert-jax embed`. Returns (rows embedded, rows skipped)."""
  inputs.check_input(input_path)
  suffix = Path(out).suffix.lower() if out else ".jsonl"
  if suffix not in OUTPUTS:
    raise errors.ConfigError(f"{out}: unknown output type {suffix or '(no extension)'!r}; use .npy or .jsonl")
  if out and os.path.abspath(out) == os.path.abspath(input_path):
    raise errors.ConfigError(f"{out}: --out would overwrite the input")
  if batch_size < 1:
    raise errors.ConfigError(f"--batch-size {batch_size}: must be at least 1")
  encoder = embeddings.Encoder(model_dir, max_length=max_length)

  def embed(texts):
    if not texts:
      return []
    return [{"embedding": v} for v in encoder.embed([t[0] for t in texts], batch_size=batch_size)]

  # Chunks of whole batches: Encoder.embed over a chunk batches as over the whole input.
  chunk_rows = max(1, CHUNK_ROWS // batch_size) * batch_size
  with inputs.InputRows(input_path, inputs.SENTENCE_COLUMNS, text_columns=text_columns, text_fields=None) as rows:
    if suffix == ".npy":
      sink = NpyRows(encoder.config.hidden_size)
      good, bad = run_rows(rows, embed, sink, chunk_rows)
      sink.save(out)
    else:
      sink = JsonLinesOut(out)
      try:
        good, bad = run_rows(rows, embed, sink, chunk_rows)
        sink.write([])
      finally:
        sink.close()
  if bad:
    print(f"distilbert-jax: {bad} bad row(s) of {rows.name} skipped", file=sys.stderr)
  return good, bad
