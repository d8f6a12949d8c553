"""The step's metrics over a logging window: sums and denominators added up on the device and
divided once, when written (metrics.jsonl and TensorBoard), and the open window's JSON form
that a checkpoint carries so that a resumed run logs what an uninterrupted one would."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax import atomic, records, storage


@jax.jit
def add_metrics(window, metrics):
  """The window so far plus one step's metrics, both {"mean": {k: (sum, count)}, "total": {k: v}}."""
  return jax.tree.map(jnp.add, window, metrics)


def window_to_json(window, seconds: float) -> Optional[dict]:
  """The open logging window as JSON for the checkpoint: float32 sums written exactly (a float32
  is a double exactly), so that a resumed run logs what an uninterrupted one would."""
  if window is None:
    return None
  host = jax.device_get(window)
  return {"mean": {k: [float(s), float(c)] for k, (s, c) in host["mean"].items()},
          "total": {k: float(v) for k, v in host["total"].items()}, "seconds": seconds}


def window_from_json(stored: Optional[dict]) -> tuple:
  """(the window as the step returns it, its seconds so far), or (None, 0.0)."""
  if not stored:
    return None, 0.0
  f32 = lambda x: jnp.asarray(np.float32(x))
  window = {"mean": {k: (f32(s), f32(c)) for k, (s, c) in stored["mean"].items()},
            "total": {k: f32(v) for k, v in stored["total"].items()}}
  return window, float(stored["seconds"])


def normalise_metrics(window) -> dict:
  """{"mean": {k: (sum, count)}, "total": {k: v}} on the host -> {k: float}."""
  out = {k: float(s) / float(c) for k, (s, c) in window["mean"].items() if float(c) > 0}
  out.update({k: float(v) for k, v in window["total"].items()})
  return out


class MetricsWriter:
  """metrics.jsonl + TensorBoard, written by process 0 only. A local metrics.jsonl is appended
  to, a line per write; on object storage, which cannot append, it is rewritten whole (one
  upload) at each write."""

  def __init__(self, workdir: Path, start_step: int, enabled: bool):
    self.enabled = enabled
    if not enabled:
      return
    self.path = workdir / "metrics.jsonl"
    self.lines = []
    if self.path.exists():  # after a resume, forget what the interrupted run logged past it
      self.lines = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= start_step]
      atomic.write_text(self.path, "".join(line + "\n" for line in self.lines))
    from tensorboardX import SummaryWriter
    self.tb_dir, self.tb_local = workdir / "tensorboard", None
    if storage.is_remote(workdir):
      # Events are written locally and each flush uploads the file whole: tensorboardX's own gs://
      # writer uploads again from an exit hook, which blocks for minutes once the bucket is gone.
      self.tb_local = tempfile.mkdtemp(prefix="distilbert-jax-tensorboard-")
    self.tb = SummaryWriter(self.tb_local or str(self.tb_dir))

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    line = records.strict_json({"step": step, **metrics}, indent=None)
    if storage.is_remote(self.path):
      self.lines.append(line)
      atomic.write_text(self.path, "".join(line + "\n" for line in self.lines))
    else:
      with self.path.open("a") as f:
        f.write(line + "\n")
    for k, v in metrics.items():
      if isinstance(v, (int, float)):
        self.tb.add_scalar(k, v, step)
    self.tb.flush()
    self._upload_events()

  def _upload_events(self):
    if self.tb_local:
      for name in os.listdir(self.tb_local):
        storage.upload_file(os.path.join(self.tb_local, name), self.tb_dir / name)

  def close(self):
    if self.enabled and self.tb is not None:
      self.tb.close()
      self._upload_events()
      if self.tb_local:
        shutil.rmtree(self.tb_local, ignore_errors=True)
      self.tb = None


def progress_bar(total: int, initial: int, enabled: bool):
  """A tqdm bar of optimizer steps (disabled: it prints nothing)."""
  import tqdm
  return tqdm.tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
