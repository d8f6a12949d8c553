"""Accelerator targets for ahead-of-time compiles: Cloud TPU slices and GPU machines by name.

  v4-8 ... v4-4096, v5p-8 ..., v5e-1 ... v5e-256, v6e-1 ... v6e-256   (one slice)
  v5e-256x2                                                           (two slices)
  h100x8, h200x8, a100x8, h100x8x4                                    (8 GPUs; 4 nodes of 8)

A target's devices come from `jax.experimental.topologies` without any hardware: TPU ones from
libtpu (PyPI `libtpu`, the `tpu` extra), GPU ones from the CUDA PJRT plugin (PyPI
`jax-cuda12-pjrt`, the `cuda` extra) given a target description that this file writes.

Cloud TPU names count TensorCores for v4 and v5p (two per chip, one device per chip in their
megacore mode) and chips for v5e and v6e, as `gcloud compute tpus` does.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import re
from typing import Optional

from distilbert_jax import errors

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One device's figures: dense bfloat16 peak, HBM, and the bandwidths of the roofline.

  interconnect_bandwidth: bytes/s one device moves in each direction inside a TPU slice (ICI) or
  a GPU node (NVLink); network_bandwidth: the same across slices (the data-centre network) or
  nodes (InfiniBand), None where the vendor gives no per-chip figure."""
  name: str
  platform: str  # "tpu" or "gpu"
  peak_flops: float
  hbm_bytes: int
  hbm_bandwidth: float
  interconnect_bandwidth: float
  network_bandwidth: Optional[float]
  source: str
  device_kinds: tuple = ()  # jax.Device.device_kind names of this chip, where they differ from `name`


# Sources: Google Cloud's TPU pages (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e: "Peak compute
# per chip (bf16)", HBM capacity and bandwidth; the per-chip interconnect figure is the page's
# all-reduce bandwidth per pod divided by its chips, which is half the bidirectional ICI figure
# where both are given; data-centre network per chip: v5p's page, v5e's 6.4 Tbps per 256-chip
# pod); NVIDIA's data sheets (H100 SXM, H200 SXM, A100 SXM 80 GB: dense bfloat16 tensor-core
# peak, HBM, NVLink 900 or 600 GB/s both directions together; one 400 or 200 Gb/s InfiniBand
# adapter per GPU in DGX H100 / A100 nodes).
CHIPS = {
    "v4": Chip("TPU v4", "tpu", 275e12, 32 * GiB, 1200e9, 1.1e15 / 4096, None,
               "cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", "tpu", 197e12, 16 * GiB, 819e9, 51.2e12 / 256, 6.4e12 / 8 / 256,
                "cloud.google.com/tpu/docs/v5e", ("TPU v5 lite",)),
    "v5p": Chip("TPU v5p", "tpu", 459e12, 95 * GiB, 2765e9, 1200e9 / 2, 50e9 / 8,
                "cloud.google.com/tpu/docs/v5p", ("TPU v5",)),
    "v6e": Chip("TPU v6e", "tpu", 918e12, 32 * GiB, 1640e9, 102.4e12 / 256, None,
                "cloud.google.com/tpu/docs/v6e", ("TPU v6 lite",)),
    "h100": Chip("NVIDIA H100 80GB HBM3", "gpu", 989e12, 81559 * 2 ** 20, 3.35e12, 450e9, 400e9 / 8,
                 "NVIDIA H100 Tensor Core GPU data sheet (SXM)", ("H100",)),
    "h200": Chip("NVIDIA H200", "gpu", 989e12, 143771 * 2 ** 20, 4.8e12, 450e9, 400e9 / 8,
                 "NVIDIA H200 Tensor Core GPU data sheet (SXM)", ("H200",)),
    "a100": Chip("NVIDIA A100-SXM4-80GB", "gpu", 312e12, 81920 * 2 ** 20, 2.039e12, 300e9, 200e9 / 8,
                 "NVIDIA A100 Tensor Core GPU data sheet (SXM 80 GB)", ("A100",)),
}

def chip_of_device_kind(device_kind: str) -> Optional[Chip]:
  """The chip a jax.Device.device_kind names ("TPU v5 lite", "NVIDIA H100 80GB HBM3"), or None."""
  names = lambda chip: (chip.name.lower(), *(k.lower() for k in chip.device_kinds))
  kind = device_kind.lower()
  exact = [chip for chip in CHIPS.values() if kind in names(chip)]
  # GPUs by their model within longer names ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB").
  within = [chip for chip in CHIPS.values() if chip.platform == "gpu" and any(n in kind for n in names(chip))]
  return (exact or within or [None])[0]


# What XLA's GPU compiler needs to know of a device (a GpuTargetConfigProto), from the CUDA
# programming guide's per-architecture limits and the data sheets: SMs, shared memory per SM and
# per block (opt-in), L2, clock, compute capability.
_GPU_DEVICE = {
    "h100": dict(core_count=132, fpus_per_core=128, shared_memory_per_core=228 * 1024,
                 shared_memory_per_block_optin=227 * 1024, l2_cache_size=50 * 2 ** 20, clock_rate_ghz=1.98,
                 compute_capability=(9, 0)),
    "h200": dict(core_count=132, fpus_per_core=128, shared_memory_per_core=228 * 1024,
                 shared_memory_per_block_optin=227 * 1024, l2_cache_size=50 * 2 ** 20, clock_rate_ghz=1.98,
                 compute_capability=(9, 0)),
    "a100": dict(core_count=108, fpus_per_core=64, shared_memory_per_core=164 * 1024,
                 shared_memory_per_block_optin=163 * 1024, l2_cache_size=40 * 2 ** 20, clock_rate_ghz=1.41,
                 compute_capability=(8, 0)),
}

# TensorCores per chip in Cloud TPU names (v4-8 is 4 chips), and the torus dimensions.
_CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}
_TORUS_DIMS = {"v4": 3, "v5p": 3, "v5e": 2, "v6e": 2}
_MAX_CHIPS = {"v4": 2048, "v5p": 4096, "v5e": 256, "v6e": 256}
_TOPOLOGY_PREFIX = {"v4": "v4", "v5p": "v5p", "v5e": "v5e", "v6e": "v6e"}

TARGET_HELP = ("v4-8 ... v4-4096, v5p-8 ..., v5e-1 ... v5e-256, v6e-1 ... v6e-256, a multi-slice "
               "v5e-256x2, or GPUs h100x8, h200x8, a100x8, h100x8x4 (4 nodes)")


@dataclasses.dataclass(frozen=True)
class Target:
  name: str
  chip: Chip
  kind: str  # a key of CHIPS
  topology: str  # "16x16" (TPU chips per slice) or "1x4x8" (GPU: partitions x nodes x per node)
  num_slices: int  # TPU slices, or GPU nodes

  @property
  def platform(self) -> str:
    return self.chip.platform

  @property
  def num_devices(self) -> int:
    per = math.prod(int(x) for x in self.topology.split("x"))
    return per * self.num_slices if self.platform == "tpu" else per

  @property
  def devices_per_slice(self) -> int:
    return self.num_devices // self.num_slices

  def devices(self) -> list:
    """The target's devices, described by the platform's compiler (no hardware needed)."""
    from jax.experimental import topologies
    if self.platform == "tpu":
      _quiet_libtpu()
      try:
        importlib.import_module("libtpu")  # only to say which package is missing
      except ImportError:
        raise errors.ConfigError(f"compiling for {self.name} needs libtpu: pip install 'distilbert_jax[tpu]' "
                                 "(or libtpu)") from None
      kwargs = {"chip_config_name": "megacore"} if _CORES_PER_CHIP[self.kind] == 2 else {}
      if self.num_slices > 1:
        kwargs["num_slices"] = self.num_slices
      sizes = [int(x) for x in self.topology.split("x")]
      if len(sizes) == 2 and math.prod(sizes) < 4:  # libtpu's default host holds 2x2 chips
        kwargs["chips_per_host_bounds"] = (*sizes, 1)
      topology = topologies.get_topology_desc(f"{_TOPOLOGY_PREFIX[self.kind]}:{self.topology}", platform="tpu",
                                              **kwargs)
    else:
      try:
        importlib.import_module("jax_plugins.xla_cuda12")
      except ImportError:
        raise errors.ConfigError(f"compiling for {self.name} needs the CUDA plugin: pip install "
                                 "'distilbert_jax[cuda]' (or jax-cuda12-pjrt)") from None
      topology = topologies.get_topology_desc(platform="cuda", target_config=gpu_target_config(self.kind),
                                              topology=self.topology)
    return list(topology.devices)

  def node_of(self, device) -> int:
    """Which slice (TPU) or node (GPU) a device of `devices()` sits in."""
    return int(getattr(device, "slice_index", 0)) if self.platform == "tpu" else int(device.process_index)


def _quiet_libtpu() -> None:
  """libtpu, loaded on a machine that has no TPU, asks for the variables a TPU VM sets and
  prints a warning per missing one; nothing here runs on a TPU, so any plausible values do.
  Its lock file (one process per TPU) is skipped too: compiles use no chip, and several may run
  at once, beside a training job on a TPU VM included."""
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def _torus(chips: int, dims: int) -> str:
  """The standard slice shape of `chips` (a power of two) as Cloud TPU names it: doubling the
  smallest (last) dimension from 1x1 (2D: 16 -> 4x4) or 2x2x1 (3D: 16 -> 2x2x4)."""
  sizes = [2, 2, 1] if dims == 3 else [1, 1]
  while math.prod(sizes) < chips:
    sizes[max(i for i in range(dims) if sizes[i] == min(sizes))] *= 2
  return "x".join(str(s) for s in sizes)


def parse_target(name: str) -> Target:
  """A Target from its name (TARGET_HELP); a one-line error for anything else."""
  text = name.strip().lower()
  gpu = re.fullmatch(r"(h100|h200|a100)x(\d+)(?:x(\d+))?", text)
  if gpu:
    kind, per_node, nodes = gpu.group(1), int(gpu.group(2)), int(gpu.group(3) or 1)
    if not 1 <= per_node <= 8:
      raise errors.ConfigError(f"target {name!r}: a node holds 1 to 8 GPUs")
    return Target(name, CHIPS[kind], kind, f"1x{nodes}x{per_node}", nodes)
  tpu = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)(?:x(\d+))?", text)
  if not tpu:
    raise errors.ConfigError(f"unknown target {name!r}: expected {TARGET_HELP}")
  kind = "v5e" if tpu.group(1) == "v5litepod" else tpu.group(1)
  count, slices = int(tpu.group(2)), int(tpu.group(3) or 1)
  cores = _CORES_PER_CHIP[kind]
  chips = count // cores
  smallest = 4 if _TORUS_DIMS[kind] == 3 else 1
  if count % cores or chips < smallest or chips & (chips - 1) or chips > _MAX_CHIPS[kind]:
    raise errors.ConfigError(f"target {name!r}: {kind}-N takes N = {cores * smallest} x a power of two up "
                             f"to {cores * _MAX_CHIPS[kind]}")
  if slices > 1 and CHIPS[kind].network_bandwidth is None:
    raise errors.ConfigError(f"target {name!r}: several {kind} slices are not supported (no published "
                             "per-chip data-centre network bandwidth for the roofline)")
  return Target(name, CHIPS[kind], kind, _torus(chips, _TORUS_DIMS[kind]), slices)


def gpu_target_config(kind: str) -> str:
  """A GpuTargetConfigProto in text form: the device XLA's GPU compiler compiles for."""
  chip, d = CHIPS[kind], _GPU_DEVICE[kind]
  major, minor = d["compute_capability"]
  return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {d["shared_memory_per_core"]}
  threads_per_core_limit: 2048
  core_count: {d["core_count"]}
  fpus_per_core: {d["fpus_per_core"]}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {int(chip.hbm_bandwidth)}
  l2_cache_size: {d["l2_cache_size"]}
  clock_rate_ghz: {d["clock_rate_ghz"]}
  device_memory_size: {chip.hbm_bytes}
  shared_memory_per_block_optin: {d["shared_memory_per_block_optin"]}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 1 }}
device_description_str: "{chip.name}"
"""
