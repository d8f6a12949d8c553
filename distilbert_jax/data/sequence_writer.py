"""Token ids to framed sequences on disk: chunk, frame, filter, pack, and append to .npy files.

Sequences follow binarized_data.py and train.py of the original recipe (transformers'
examples/research_projects/distillation): [CLS] text [SEP]; a text longer than max_length is
cut into chunks of max_length - 2 tokens, each re-framed with [CLS]/[SEP]; sequences shorter
than `min_length` (default 12: "11 tokens or fewer are dropped") and sequences at least half
[UNK] are dropped. With `pack=True` a sentence corpus is packed instead: [CLS] s1 [SEP] s2
[SEP] ... up to max_length; the [UNK] filter then applies to each sentence and `min_length` to
each packed sequence.

The files: tokens.npy (flat ids: uint16 when the vocabulary has at most 65,536 entries, else
int32) and offsets.npy (int64, num_sequences + 1; sequence i is tokens[offsets[i]:offsets[i + 1]]).
"""
from __future__ import annotations

import itertools
import os
from typing import Sequence

import numpy as np


class SequenceWriter:
  """Turns token id lists into framed sequences and appends them to tokens/offsets files."""

  def __init__(self, directory, tokenizer, *, max_length, min_length, pack, counts):
    self.tokens = NpyAppender(os.path.join(directory, "tokens.npy"),
                              token_dtype(tokenizer.vocab_size))
    self.offsets = NpyAppender(os.path.join(directory, "offsets.npy"), np.int64)
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


class NpyAppender:
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


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16 if vocab_size <= 65_536 else np.int32)
