"""The processes and devices a run trains on: `jax.distributed` for several hosts, and the
(data, fsdp, tensor) mesh of `config.mesh`."""
from __future__ import annotations

import os

import jax
from absl import logging

from distilbert_jax import errors, sharding


def initialize_distributed(config) -> None:
  if config.train.multihost and not jax.distributed.is_initialized():
    # TPU pods and Slurm are detected by JAX; elsewhere (e.g. several processes on one machine)
    # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID say who is who.
    env = os.environ
    kwargs = ({"num_processes": int(env["JAX_NUM_PROCESSES"]), "process_id": int(env["JAX_PROCESS_ID"])}
              if "JAX_NUM_PROCESSES" in env else {})
    jax.distributed.initialize(**kwargs)


def make_mesh(config, devices=None) -> sharding.Mesh:
  """The (data, fsdp, tensor) mesh of `config.mesh` over `devices` (default: all of JAX's),
  checked against the batch size."""
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
  t, rows = config.train, mesh.shape["data"] * mesh.shape["fsdp"]
  if t.batch_size % rows:
    raise errors.ConfigError(f"train.batch_size={t.batch_size} does not split over the mesh's data x fsdp = {rows} "
                             f"devices")
  logging.info("mesh: %s", dict(mesh.shape))
  return mesh


def mesh_platform(mesh: sharding.Mesh) -> str:
  """The platform of the mesh's devices ("cpu", "tpu", "gpu"): the target a step is compiled for,
  which for an ahead-of-time compile is not the machine that compiles."""
  platform = mesh.devices.flat[0].platform
  return "gpu" if platform in ("cuda", "rocm") else platform
