"""The config checks that every job shares; each job's check_config calls them first.

  check_schedule(config)    train.*: batch, accumulation, logging and checkpoint intervals
  check_directory(path, key) a model directory (or Hub repo id) the config names exists
  check_processes(config)   the batch splits over the processes (needs jax.distributed up)
"""
from __future__ import annotations

import jax

from distilbert_jax import errors


def check_schedule(config) -> None:
  """train.batch_size splits into train.grad_accum_steps micro-batches; intervals are positive."""
  t = config.train
  if t.batch_size <= 0 or t.grad_accum_steps <= 0 or t.batch_size % t.grad_accum_steps:
    raise errors.ConfigError(f"train.batch_size={t.batch_size} must be a positive multiple of "
                             f"train.grad_accum_steps={t.grad_accum_steps}")
  for name in ("log_every", "checkpoint_every"):
    if t[name] <= 0:
      raise errors.ConfigError(f"train.{name}={t[name]} must be > 0")


def check_directory(path: str, key: str) -> str:
  """`path`, from config key `key`, is an existing directory or a Hub repo id, which is looked up
  (downloaded unless cached) now, so that a bad one fails before anything is written. Returns
  the local directory; an empty path is not checked and is returned as is."""
  from distilbert_jax.convert import hub
  if not path:
    return path
  try:
    return hub.resolve(path)
  except hub.HubError as e:
    raise errors.ConfigError(f"{e} ({key})") from e


def check_processes(config) -> None:
  """Every process's share of the batch splits into train.grad_accum_steps micro-batches."""
  t = config.train
  if t.batch_size % (jax.process_count() * t.grad_accum_steps):
    raise errors.ConfigError(f"train.batch_size={t.batch_size} must divide by processes ({jax.process_count()}) "
                             f"x train.grad_accum_steps ({t.grad_accum_steps})")
