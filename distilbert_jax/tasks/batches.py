"""Batches of a fine-tuning task's in-memory arrays, and the model inputs of a batch.

  ArrayBatches   shuffled, length-bucketed training batches (endless; its state resumes it)
  eval_batches   every example once, length-sorted, the last batch padded and masked
  model_kwargs   a batch's inputs to a model (DistilBERT has no token types)
"""
from __future__ import annotations

import numpy as np

from distilbert_jax import errors, train
from distilbert_jax.data import input_pipeline


class ArrayBatches:
  """Shuffled, length-bucketed global batches over in-memory arrays (input_pipeline.plan_epoch),
  endless; this process's rows of each. State: the next global batch index."""

  def __init__(self, arrays: dict, *, global_batch_size: int, bucket_lengths, seed: int,
               process_index: int = 0, process_count: int = 1):
    self.arrays = {k: v for k, v in arrays.items() if k != "lengths"}
    self.lengths = arrays["lengths"]
    self.global_batch_size, self.seed = global_batch_size, seed
    self.bucket_lengths = tuple(int(b) for b in bucket_lengths)
    if self.bucket_lengths[-1] < self.lengths.max(initial=0):
      raise errors.ConfigError(f"data.bucket_lengths {self.bucket_lengths} end below the longest row "
                               f"({int(self.lengths.max())} tokens); raise the last one to data.max_length")
    per_process = global_batch_size // process_count
    self._rows = slice(process_index * per_process, (process_index + 1) * per_process)
    self.batches_per_epoch = len(self.lengths) // global_batch_size
    if not self.batches_per_epoch:
      raise errors.ConfigError(f"{len(self.lengths)} training examples make no batch of "
                               f"train.batch_size={global_batch_size}")
    self.next_batch, self._plan = 0, (None, None)

  def _epoch_plan(self, epoch: int):
    if self._plan[0] != epoch:
      self._plan = (epoch, input_pipeline.plan_epoch(self.lengths, global_batch_size=self.global_batch_size,
                                                     bucket_lengths=self.bucket_lengths, seed=self.seed,
                                                     epoch=epoch))
    return self._plan[1]

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    epoch, index = divmod(self.next_batch, self.batches_per_epoch)
    batches, lengths = self._epoch_plan(epoch)
    rows, length = batches[index, self._rows], int(lengths[index])
    self.next_batch += 1
    # Token arrays are cut to the batch's length; other rows (teacher_logits [n, outputs]) are whole.
    width = self.arrays["input_ids"].shape[1]
    return {k: v[rows, :length] if v.ndim == 2 and v.shape[1] == width else v[rows] for k, v in self.arrays.items()}

  def get_state(self) -> dict:
    return {"next_batch": self.next_batch, "num_examples": len(self.lengths),
            "global_batch_size": self.global_batch_size, "seed": self.seed}

  def set_state(self, state: dict) -> None:
    expected = {"num_examples": len(self.lengths), "global_batch_size": self.global_batch_size, "seed": self.seed}
    if any(state.get(k) != v for k, v in expected.items()):
      raise train.TrainingError(f"the checkpoint's data position {state} belongs to other data or settings "
                                f"({expected})")
    self.next_batch = int(state["next_batch"])


def eval_batches(arrays: dict, batch_size: int, bucket_lengths):
  """Yields (row indices [batch_size] with -1 for padding rows, {name: [batch_size, L]}): every
  example once, in length-sorted batches; the last batch is padded, never dropped."""
  lengths = arrays["lengths"]
  batches, batch_lengths = input_pipeline.plan_epoch(
      lengths, global_batch_size=batch_size, bucket_lengths=bucket_lengths, seed=0, epoch=0, shuffle=False,
      drop_remainder=False)
  names = ("input_ids", "attention_mask", "token_type_ids")
  for rows, length in zip(batches, batch_lengths):
    safe = np.where(rows >= 0, rows, 0)
    batch = {k: arrays[k][safe, :length] for k in names}
    batch["attention_mask"] = np.where((rows >= 0)[:, None], batch["attention_mask"], 0)
    yield rows, batch


def model_kwargs(model, batch) -> dict:
  """The model's inputs from a batch: DistilBERT has no token types."""
  kw = dict(attention_mask=batch["attention_mask"])
  if model.config.model_type == "bert":
    kw["token_type_ids"] = batch["token_type_ids"]
  return kw
