"""The Hugging Face fast tokenizer a token cache is built with, and its special token ids.

A missing tokenizer.json, a special token it lacks, or a vocabulary size other than the
expected one raise `InputPipelineError`.
"""
from __future__ import annotations

import hashlib
import json
import os

import tokenizers

from distilbert_jax.data import InputPipelineError

SPECIAL_TOKENS = ("cls", "sep", "pad", "mask", "unk")


class Tokenizer:
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
    names = {f"{t}_token": f"[{t.upper()}]" for t in SPECIAL_TOKENS}  # BERT's names.
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
    for kind in SPECIAL_TOKENS:
      token_id = self.tokenizer.token_to_id(names[f"{kind}_token"])
      if token_id is None:
        raise InputPipelineError(f"{path}: no {kind} token {names[f'{kind}_token']!r}")
      self.special_ids[kind] = token_id


def tokenizer_vocab_size(tokenizer_dir: str) -> int:
  """The vocabulary size of the fast tokenizer in `tokenizer_dir` (its tokenizer.json)."""
  return Tokenizer(tokenizer_dir).vocab_size
