"""Orbax checkpoints of a training run: the whole TrainState and the data position, written
asynchronously, restored onto any mesh, with unreadable ones set aside rather than trusted."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import jax
import orbax.checkpoint as ocp
from absl import logging

from distilbert_jax import storage
from distilbert_jax.errors import TrainingError


class Checkpoints:
  """Orbax checkpoints of (TrainState, data position) in WORKDIR/checkpoints, written
  asynchronously. `restore` takes the newest readable one: an unreadable newest checkpoint (a
  file deleted or truncated) is reported in one line and moved to WORKDIR/unreadable_checkpoints,
  and the one before it is tried; with checkpoints present but none readable it raises rather
  than train from scratch over them."""

  def __init__(self, workdir: Path, keep: int):
    self.directory = storage.path(workdir) / "checkpoints"  # gs:// too: orbax writes there itself
    self.quarantine = storage.path(workdir) / "unreadable_checkpoints"
    self.keep = keep
    self.manager = self._open()

  def _open(self):
    return ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self.keep, enable_async_checkpointing=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state)), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def restore(self, abstract_state) -> Optional[tuple]:
    """(state placed as `abstract_state`'s shardings say, data state), or None without checkpoints."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    failures = []
    expected = _param_shapes(abstract_state.params)
    for step in steps:
      try:
        stored = _param_shapes(self.manager.item_metadata(step)["state"]["params"])
      except Exception:  # unreadable metadata: the restore below reports it
        stored = None
      if stored is not None and stored != expected:
        differ = sorted(set(stored.items()) ^ set(expected.items()))[:2]
        raise TrainingError(f"{self.directory}/{step}: the checkpoint holds another model than this config builds "
                            f"(e.g. {differ}); use another --workdir, or the config that wrote it")
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        state, data_state = restored["state"], restored["data"]
        if data_state is None or int(jax.device_get(state.step)) != step:
          raise ValueError("incomplete checkpoint")
      except (OSError, ValueError) as e:  # what orbax and tensorstore raise for missing and truncated files
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        failures.append(f"step {step}: {reason}")
        logging.warning("checkpoint %s/%d is unreadable (%s); trying the one before", self.directory, step, reason)
        print(f"distilbert-jax: checkpoint {self.directory}/{step} is unreadable ({reason}); "
              f"it is moved to {self.quarantine}", flush=True)
        self._set_aside(step)
        continue
      if failures:
        print(f"distilbert-jax: resuming from the checkpoint of step {step}", flush=True)
      return state, data_state
    if failures:
      raise TrainingError(f"{self.directory}: no readable checkpoint ({'; '.join(failures)}); they were moved "
                          f"to {self.quarantine}: delete them to start from scratch")
    return None

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      if not storage.is_remote(self.quarantine):
        self.quarantine.mkdir(parents=True, exist_ok=True)
      storage.move(self.directory / str(step), self.quarantine / f"{step}.{int(time.time())}")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"checkpoint_set_aside_{step}")
    self.manager.close()
    self.manager = self._open()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _param_shapes(tree) -> dict:
  """{"a/b/kernel": shape} of a parameter tree (arrays, abstract arrays or orbax metadata)."""
  flat = jax.tree_util.tree_leaves_with_path(tree)
  name = lambda path: "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
  return {name(path): tuple(leaf.shape) for path, leaf in flat}
