"""atomic: outputs appear whole or not at all, and a failure leaves what was there before."""
import os

import numpy as np
import pytest

from distilbert_jax import atomic


def test_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "sub" / "out.json"
  atomic.write_text(path, "one")
  atomic.write_text(path, "two")
  assert path.read_text() == "two"
  assert sorted(os.listdir(path.parent)) == ["out.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "counts.npy"
  atomic.write_bytes(path, b"old")
  with pytest.raises(RuntimeError, match="interrupted"):
    with atomic.writing(path, "wb") as f:
      np.save(f, np.arange(10))
      raise RuntimeError("interrupted")
  assert path.read_bytes() == b"old"
  assert os.listdir(tmp_path) == ["counts.npy"]


def test_writing_binary_holds_what_was_written(tmp_path):
  path = tmp_path / "counts.npy"
  with atomic.writing(path, "wb") as f:
    np.save(f, np.arange(5))
  np.testing.assert_array_equal(np.load(path), np.arange(5))


def test_directory_appears_only_when_complete(tmp_path):
  out = tmp_path / "model"
  with atomic.directory(out, replace=True) as tmp:
    (tmp / "config.json").write_text("{}")
    assert not out.exists()
  assert os.listdir(out) == ["config.json"]
  assert os.listdir(tmp_path) == ["model"]


def test_directory_replace_swaps_the_whole_directory(tmp_path):
  out = tmp_path / "model"
  with atomic.directory(out, replace=True) as tmp:
    (tmp / "old.bin").write_text("old")
  with atomic.directory(out, replace=True) as tmp:
    (tmp / "new.bin").write_text("new")
  assert os.listdir(out) == ["new.bin"]
  assert os.listdir(tmp_path) == ["model"]


def test_directory_without_replace_keeps_the_first_one_published(tmp_path):
  out = tmp_path / "cache"
  with atomic.directory(out, replace=False) as first:
    (first / "a").write_text("first")
    with atomic.directory(out, replace=False) as second:  # another writer finishes first
      (second / "a").write_text("second")
  assert (out / "a").read_text() == "second"
  assert os.listdir(tmp_path) == ["cache"]


def test_failed_directory_leaves_the_old_one_and_no_temporary(tmp_path):
  out = tmp_path / "model"
  with atomic.directory(out, replace=True) as tmp:
    (tmp / "weights").write_text("good")
  with pytest.raises(ValueError):
    with atomic.directory(out, replace=True) as tmp:
      (tmp / "weights").write_text("half")
      raise ValueError("bad input")
  assert (out / "weights").read_text() == "good"
  assert os.listdir(tmp_path) == ["model"]
