"""Preemption: SIGTERM or SIGINT ends the current step, a checkpoint is written and the run
raises `Preempted`; the same command then resumes bit-identically."""
from __future__ import annotations

import signal
from typing import Optional

import jax
import numpy as np

from distilbert_jax import errors


class Preempted(errors.Error):
  """SIGTERM or SIGINT: a checkpoint was written; the same command resumes."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_status = 128 + signum  # the shell's convention for "ended by signal"


class StopSignals:
  """Turns SIGTERM and SIGINT into a flag that the loop reads after each step (the step in
  flight finishes; the checkpoint is written; the process exits). Cloud TPU VMs and Slurm
  preempt with SIGTERM and a grace period of seconds."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread: signals are the caller's business
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # a second signal: stop now
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)

  def agreed(self) -> Optional[int]:
    """The signal number if any process received one; every process gets the same answer."""
    if jax.process_count() == 1:
      return self.signum
    from jax.experimental import multihost_utils
    everyone = multihost_utils.process_allgather(np.asarray(self.signum or 0, np.int32))
    return int(np.max(everyone)) or None


def preempted(signum: int, step: int, checkpoint_dir) -> Preempted:
  """The error a run raises after it saved the checkpoint of `step` on signal `signum`."""
  name = signal.Signals(signum).name
  return Preempted(f"{name} at step {step}: checkpoint saved in {checkpoint_dir}; run the same "
                   f"command again to resume", signum)
