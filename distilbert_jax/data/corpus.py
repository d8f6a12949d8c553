"""The embedded default corpus: English sentences from the Python standard library's docstrings.

`make distill` must run on a fresh machine with no network and no data of the user's, so the
project generates its corpus from text that every Python installation carries: the docstrings
of the standard library, read with `ast` (nothing is imported or executed). Sentences are split,
filtered to look like prose rather than code, de-duplicated and shuffled with a fixed seed, and
split into a training file and a held-out file used only for evaluation.
"""
from __future__ import annotations

import ast
import hashlib
import os
import random
import re
import sysconfig
from pathlib import Path

from distilbert_jax import atomic

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE_CHARS = re.compile(r"[=<>{}\[\]_`|\\#@$*~^]|\(\)|::|->|\w\.\w")


def _docstrings(path: Path):
  try:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
    return
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      doc = ast.get_docstring(node, clean=True)
      if doc:
        yield doc


def _sentences(doc: str):
  # Paragraphs first: docstrings wrap lines, and blank lines separate prose from examples.
  for paragraph in re.split(r"\n\s*\n", doc):
    if paragraph.lstrip().startswith((">>>", "...", "-", "*", ":")):
      continue
    text = " ".join(paragraph.split())
    for sentence in _SENTENCE_END.split(text):
      words = sentence.split()
      if not 8 <= len(words) <= 48 or not sentence[0].isupper() or sentence[-1] not in ".!?":
        continue
      if _CODE_CHARS.search(sentence) or sum(w.isalpha() for w in words) < 0.8 * len(words):
        continue
      yield sentence


def stdlib_sentences() -> list[str]:
  """Unique prose sentences from the standard library's docstrings, in a fixed order."""
  root = Path(sysconfig.get_paths()["stdlib"])
  seen, out = set(), []
  for path in sorted(root.rglob("*.py")):
    if any(part in ("test", "tests", "idlelib", "site-packages", "lib2to3") for part in path.relative_to(root).parts):
      continue
    for doc in _docstrings(path):
      for sentence in _sentences(doc):
        key = sentence.lower()
        if key not in seen:
          seen.add(key)
          out.append(sentence)
  return out


def write_embedded_corpus(out_dir: str | os.PathLike, heldout_fraction: float = 0.05, seed: int = 0) -> dict:
  """Writes train.txt and heldout.txt (one sentence per line) into out_dir, atomically.

  Returns {"train": path, "heldout": path, "num_train": n, "num_heldout": m, "fingerprint": hex}.
  Reuses the files when they exist.
  """
  out_dir = Path(out_dir)
  train, heldout = out_dir / "train.txt", out_dir / "heldout.txt"
  if not (train.exists() and heldout.exists()):
    sentences = stdlib_sentences()
    if len(sentences) < 1000:
      raise RuntimeError(f"only {len(sentences)} sentences found in the standard library at "
                         f"{sysconfig.get_paths()['stdlib']}: cannot build the embedded corpus")
    random.Random(seed).shuffle(sentences)
    n_heldout = max(1, int(len(sentences) * heldout_fraction))
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, lines in ((heldout, sentences[:n_heldout]), (train, sentences[n_heldout:])):
      atomic.write_text(path, "\n".join(lines) + "\n")  # several processes may write at once
  count = lambda p: sum(1 for _ in p.open(encoding="utf-8"))
  digest = hashlib.sha256(train.read_bytes() + heldout.read_bytes()).hexdigest()[:16]
  return {"train": str(train), "heldout": str(heldout), "num_train": count(train),
          "num_heldout": count(heldout), "fingerprint": digest}
