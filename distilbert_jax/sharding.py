"""Device mesh, logical axis rules, and the shardings of parameters, optimizer state and batches.

One mesh with three axes serves data, FSDP and tensor parallelism (MaxText's layout):
  data:   the batch is split; parameters are replicated.
  fsdp:   the batch is split too, and parameters are sharded along their `embed` dimension
          (ZeRO-3 / FSDP: all-gathered for each use, gradients reduce-scattered).
  tensor: Megatron-style tensor parallelism over `heads`, `mlp` and `vocab`.
Every parameter carries logical axis names (see models/layers.py); LOGICAL_AXIS_RULES maps them
onto mesh axes in one table. A dimension that the mesh axes do not divide is replicated instead
(for example a 30,522-row vocabulary on 4 tensor devices), so any model runs on any mesh.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distilbert_jax import errors

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axis (or None: replicated). `batch` is for activations and inputs.
LOGICAL_AXIS_RULES = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed_out", None),
    ("position", None),
    ("type", None),
    ("classes", None),
    ("layers", None),
    ("length", None),
    # Activations [batch, length, hidden] (models/layers.py ACTIVATION_AXES): rows on the batch
    # axes, the rest whole.
    ("activation_length", None),
    ("activation_embed", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh; one size may be -1 to take the remaining devices, and
  explicit sizes whose product is smaller than the device count use the first devices."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise errors.ConfigError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise errors.ConfigError(f"{len(devices)} devices are not divisible by the fixed mesh axes {sizes}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) < len(devices) and -1 not in (data, fsdp, tensor):
    devices = devices[:math.prod(sizes)]  # an explicit smaller mesh takes the first devices
  if math.prod(sizes) != len(devices):
    raise errors.ConfigError(f"mesh data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]} needs {math.prod(sizes)} "
                     f"devices, but {len(devices)} are available")
  # Tensor innermost: its collectives are the most frequent, so they get the closest devices.
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def _mesh_axes_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def logical_to_mesh_spec(logical: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                         rules=LOGICAL_AXIS_RULES) -> P:
  """PartitionSpec for one array from its logical axis names; indivisible dims are replicated,
  and a mesh axis is used at most once per array."""
  table = dict(rules)
  used, spec = set(), []
  for name, dim in zip(logical, shape):
    axes = table.get(name) if name is not None else None
    flat = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    flat = tuple(a for a in flat if a not in used and mesh.shape[a] > 1)
    if not flat or dim % _mesh_axes_size(mesh, flat):
      spec.append(None)
      continue
    used.update(flat)
    spec.append(flat[0] if len(flat) == 1 else flat)
  return P(*spec)


def param_shardings(boxed_params: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
  """NamedShardings for a parameter tree whose leaves are nn.Partitioned boxes (abstract is
  fine: the output of jax.eval_shape(model.init, ...)["params"])."""
  def one(leaf):
    names = leaf.names if isinstance(leaf, nn.Partitioned) else (None,) * len(leaf.shape)
    value = leaf.value if isinstance(leaf, nn.Partitioned) else leaf
    return NamedSharding(mesh, logical_to_mesh_spec(names, value.shape, mesh, rules))
  return jax.tree.map(one, boxed_params, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def opt_state_shardings(tx: optax.GradientTransformation, abstract_opt_state: Any, shardings: Any,
                        mesh: Mesh) -> Any:
  """Optimizer state sharded like the parameters it mirrors (Adam's moments); scalars such as
  step counts replicated."""
  replicated = NamedSharding(mesh, P())
  placed = optax.tree_map_params(
      tx, lambda _, s: s, abstract_opt_state, shardings,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, NamedSharding))
  # Leaves optax does not recognise as parameters (counts, masked-out entries) stay replicated.
  return jax.tree.map(lambda s: s if isinstance(s, NamedSharding) else replicated, placed,
                      is_leaf=lambda x: isinstance(x, NamedSharding))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Inputs [batch, length]: rows over the data and FSDP axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def global_batch_from_local(local_batch: dict, mesh: Mesh) -> dict:
  """Each process's rows of the global batch -> global jax.Arrays sharded over the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
