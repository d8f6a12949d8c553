"""Outputs that appear whole or not at all: every file and directory the project writes.

  atomic.write_text(path, text)                  # also write_bytes
  with atomic.writing(path, "wb") as f:          # any writer that takes a file object
    np.save(f, counts)
  with atomic.directory(out_dir, replace=True) as tmp:
    ...fill tmp...                               # published as out_dir on success

Each write goes to a temporary sibling (same directory, so the same file system) and is renamed
into place, so a reader never sees half an output, and a failure or an interrupt leaves what was
there before and no temporary. Each writer has its own temporary, so several processes may write
the same path at once: the last rename wins, or for directories with replace=False the first.

On object storage (a gs:// path; see storage.py) the temporary is local: a file is uploaded as
one object when the block ends (an upload appears whole or not at all), and a directory is
published between an in-progress and a completion marker, which readers check.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

from distilbert_jax import storage

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def writing(path: PathLike, mode: str = "w") -> Iterator[IO]:
  """Yields a file object open in `mode` ("w" text as UTF-8 with "\\n" newlines, or "wb"); the
  file replaces `path` when the block ends without an exception. Makes missing parents."""
  if mode not in ("w", "wb"):
    raise ValueError(f"mode {mode!r}: atomic writes are 'w' or 'wb'")
  if storage.is_remote(path):
    with tempfile.TemporaryDirectory(prefix=".atomic-") as staging:
      local = Path(staging) / "file"
      with writing(local, mode) as f:
        yield f
      storage.upload_file(local, path)
    return
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    kwargs = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
    with os.fdopen(fd, mode, **kwargs) as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_text(path: PathLike, text: str) -> Path:
  """Writes `text` (UTF-8) to `path` atomically; returns the path."""
  with writing(path, "w") as f:
    f.write(text)
  return storage.path(path) if storage.is_remote(path) else Path(path)


def write_bytes(path: PathLike, data: bytes) -> Path:
  """Writes `data` to `path` atomically; returns the path."""
  with writing(path, "wb") as f:
    f.write(data)
  return storage.path(path) if storage.is_remote(path) else Path(path)


@contextlib.contextmanager
def directory(path: PathLike, *, replace: bool) -> Iterator[Path]:
  """Yields an empty temporary sibling of `path` to fill; it becomes `path` when the block ends
  without an exception.

  If `path` exists by then: replace=True swaps it out (the old one is moved aside first, then
  deleted, so `path` is never missing a part); replace=False keeps it and discards the new
  directory (another process finished the same output first). Makes missing parents. On object
  storage the temporary is a local directory, published by storage.publish_directory.
  """
  if storage.is_remote(path):
    with tempfile.TemporaryDirectory(prefix=".atomic-") as staging:
      yield Path(staging)
      storage.publish_directory(staging, path, replace=replace)
    return
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
  try:
    yield tmp
    if not path.exists():
      try:
        os.replace(tmp, path)
        return
      except OSError:  # appeared meanwhile: another process published it
        if not path.exists():
          raise
    if replace:
      old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
      os.replace(path, old / path.name)
      os.replace(tmp, path)
      shutil.rmtree(old)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
