"""The best evaluated parameters of a run, kept in WORKDIR/best (our Flax format, through
convert) with WORKDIR/best.json saying at which step and with what metrics; the export takes
them instead of the last ones."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import jax
from absl import logging

from distilbert_jax import atomic, convert, records, storage
from distilbert_jax.train.job import Job


class BestParams:
  """The parameters with the best evaluation so far (higher `metric` is better); kept across
  resumes. Every process takes part in `update` (gathering sharded parameters); only an
  `enabled` one (process 0) writes."""

  def __init__(self, workdir: Path, metric: Optional[str], enabled: bool):
    self.dir, self.metric, self.enabled = workdir / "best", metric, enabled
    self.record_path = workdir / "best.json"
    self.record = json.loads(self.record_path.read_text()) if self.record_path.exists() else None
    if self.record is not None and not self._complete():
      # On object storage a run stopped while it replaced best/: the next evaluation writes anew.
      logging.warning("%s is incomplete; the best parameters are kept again from the next evaluation", self.dir)
      self.record = None

  def _complete(self) -> bool:
    try:
      storage.check_complete(self.dir)
      return True
    except storage.StorageError:
      return False

  def exists(self) -> bool:
    return self.metric is not None and (self.dir / "config.json").exists() and self._complete()

  def update(self, step: int, metrics: dict, params, job: Job) -> None:
    if not self.metric:
      return
    value = metrics[f"eval_{self.metric}"]
    if not math.isfinite(value):
      return  # an undefined score (say, Pearson of constant predictions) is never the best
    if self.record is not None and not value > self.record["value"]:
      return
    if self.record is not None and step < self.record["step"]:
      return  # an interrupted run already saw later steps; its record stands
    host_params = gather_to_host(params)
    self.record = {"step": step, "metric": self.metric, "value": value,
                   "metrics": {k: v for k, v in metrics.items() if k.startswith("eval_")}}
    if self.enabled:
      convert.save_flax(job.model, host_params, self.dir, tokenizer_dir=job.tokenizer_dir, overwrite=True)
      atomic.write_text(self.record_path, records.strict_json(self.record))

  def params(self):
    head = json.loads((self.dir / "config.json").read_text())[convert.FLAX_HEAD_KEY]
    return convert.load_pretrained(str(self.dir), head=head)[1]


def gather_to_host(params):
  """Sharded parameters as host arrays; with several processes every one takes part."""
  if jax.process_count() == 1:
    return jax.device_get(params)
  from jax.experimental import multihost_utils
  # tiled: each global array whole, as it is (untiled gathering stacks per-process copies and
  # refuses arrays that no process holds whole).
  return multihost_utils.process_allgather(params, tiled=True)
