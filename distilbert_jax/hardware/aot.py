"""Ahead-of-time compilation of a training job for a Cloud TPU slice or GPU machine, from any
machine: does it fit, what does it communicate, how fast can it be (MaxText's train_compile.py
does this for its models).

  distilbert-jax compile --config configs/distilbert_base.py --target v5e-256 --out report.json

The job's state is abstract (shapes and logical axes from config files; no weights are read, no
text is tokenised); the mesh is config.mesh over the target's devices; the program is the step
that `train.run` runs, built by the same `train.build_step`. The report, per device:

  per_device_bytes  params, optimizer, frozen (the teacher): the state's shards; temp: XLA's
                    temporaries; total: arguments + outputs - donated + temporaries
  flops_per_step    the compiled program's FLOPs on every device together (hlo_stats: loop bodies
                    counted as often as they run), beside flops_per_step_model (flops.py)
  collectives       instructions executed per step, by kind; collective_bytes sent per device
  step_time_lower_bound_s  a roofline: the largest of FLOPs / peak, HBM bytes / bandwidth, and
                    collective bytes / interconnect bandwidth (targets.CHIPS)
  mfu_upper_bound   model FLOPs / (devices x peak x that step time)
"""
from __future__ import annotations

import math
import re
import time
from typing import Optional

import jax
import ml_collections

from distilbert_jax import configuration, errors, jobs, train

# The paper's corpus (English Wikipedia and Toronto Book Corpus, about 3.3 billion tokens) seen
from distilbert_jax.hardware import hlo_stats, targets
# three times: the training length that the report's `hours` column assumes.
PAPER_TOKENS = 3 * 3.3e9


class DoesNotFit(errors.Error):
  """The step needs more memory per device than the target has; `report` is the compile's report
  where the compiler finished (GPU compilers do not check memory), else None."""

  def __init__(self, message: str, report: Optional[dict] = None):
    super().__init__(message)
    self.report = report


def step_length(config) -> int:
  """The padded length compiled: the longest bucket, the step that needs the most memory."""
  buckets = tuple(config.data.bucket_lengths) or (config.data.max_length,)
  return int(max(buckets))


def _shard_bytes(abstract_tree, shardings) -> int:
  leaves = jax.tree.leaves(jax.tree.map(
      lambda x, s: math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize, abstract_tree, shardings))
  return int(sum(leaves))


def _oom_message(error: Exception, target: targets.Target) -> Optional[str]:
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
    return None
  sizes = re.search(r"\(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)", text)
  if sizes:
    scale = {"K": 2 ** -20, "M": 2 ** -10, "G": 1.0, "T": 2 ** 10}
    need, have = float(sizes.group(1)) * scale[sizes.group(2)], float(sizes.group(3)) * scale[sizes.group(4)]
    return f"does not fit on {target.name}: needs {need:.2f} GiB per device of {have:.2f} GiB"
  return f"does not fit on {target.name}: {text.strip().splitlines()[0][:300]}"


def compile_step(config: ml_collections.ConfigDict, target: targets.Target, devices=None) -> dict:
  """Compiles the job's train step for `target`; returns the report (see the module docstring).
  Raises DoesNotFit when the compiler runs out of device memory, or when the compiled step needs
  more than the chip's HBM (GPU compilers do not check)."""
  config = configuration.resolve_paths(config)
  module = jobs.job_module(config)
  module.check_config(config, data=False)
  devices = devices if devices is not None else target.devices()
  mesh = train.make_mesh(config, devices=devices)
  platform = train.mesh_platform(mesh)
  job = module.make_abstract_job(config, platform)
  program = train.build_step(job, config, mesh)
  t = config.train
  length = step_length(config)

  with_sharding = lambda tree, shardings: jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
  state = with_sharding(jax.eval_shape(program.create_state, job.initial_params()), program.state_shardings)
  frozen = with_sharding(job.frozen_params, program.frozen_shardings) if job.frozen_model is not None else None
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=program.batch_sharding)
           for k, v in job.batch_spec(t.batch_size, length).items()}
  start = time.perf_counter()
  try:
    compiled = program.train_step.lower(state, frozen, batch).compile()
  except Exception as e:  # XlaRuntimeError, whose module path changes between jax releases
    message = _oom_message(e, target)
    if message is None:
      raise
    raise DoesNotFit(message) from e
  compile_seconds = time.perf_counter() - start

  memory = compiled.memory_analysis()
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
           + memory.temp_size_in_bytes)
  per_device = dict(
      params=_shard_bytes(state.params, program.state_shardings.params),
      optimizer=_shard_bytes(state.opt_state, program.state_shardings.opt_state),
      frozen=_shard_bytes(frozen, program.frozen_shardings) if frozen is not None else 0,
      temp=int(memory.temp_size_in_bytes), total=int(total))
  n = len(mesh.devices.flat)
  stats = hlo_stats.analyse(compiled.as_text(), num_partitions=n, devices_per_node=target.devices_per_slice
                            if target.num_slices > 1 else None)
  chip = target.chip
  times = dict(compute=stats.flops / chip.peak_flops, memory=stats.bytes_accessed / chip.hbm_bandwidth,
               collectives=stats.collective_bytes / chip.interconnect_bandwidth
               + (stats.network_bytes / chip.network_bandwidth if stats.network_bytes else 0.0))
  step_time = max(times.values())
  tokens = t.batch_size * length
  model_flops = job.flops_per_token(length) * tokens
  rows = mesh.shape["data"] * mesh.shape["fsdp"]
  report = dict(
      target=target.name, chip=chip.name, platform=platform, devices=n, num_slices=target.num_slices,
      mesh=dict(mesh.shape), job=config.get("job", "distill"), global_batch=t.batch_size,
      per_device_batch=t.batch_size // rows, grad_accum_steps=t.grad_accum_steps,
      per_device_micro_batch=t.batch_size // rows // t.grad_accum_steps, length=length,
      student_dtype=str(job.model.dtype), teacher_dtype=str(job.frozen_model.dtype) if job.frozen_model else None,
      per_device_bytes=per_device, hbm_bytes=chip.hbm_bytes, fits=total <= chip.hbm_bytes,
      flops_per_step=stats.flops * n, flops_per_step_model=model_flops, flops_per_device=stats.flops,
      hbm_bytes_accessed_per_device=stats.bytes_accessed,
      collectives={k: int(v) for k, v in sorted(stats.collectives.items())},
      collective_bytes=stats.collective_bytes, network_bytes=stats.network_bytes,
      unknown_trip_counts=stats.unknown_trip_counts,
      roofline_seconds=times, bound_by=max(times, key=times.get), step_time_lower_bound_s=step_time,
      mfu_upper_bound=model_flops / (n * chip.peak_flops * step_time) if step_time > 0 else None,
      tokens_per_second_upper_bound=tokens / step_time if step_time > 0 else None,
      paper_hours_lower_bound=PAPER_TOKENS * step_time / tokens / 3600 if step_time > 0 else None,
      compiler_options=train.step_compiler_options(job, platform), compile_seconds=compile_seconds,
      jax_version=jax.__version__, libtpu_version=_version("libtpu"), cuda_plugin_version=_version("jax-cuda12-pjrt"),
      chip_source=chip.source)
  if not report["fits"]:
    raise DoesNotFit(f"does not fit on {target.name}: needs {total / 2 ** 30:.2f} GiB per device of "
                     f"{chip.hbm_bytes / 2 ** 30:.2f} GiB", report)
  return report


def _version(package: str) -> Optional[str]:
  from importlib import metadata
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def fit_batch(config: ml_collections.ConfigDict, target: targets.Target) -> tuple[dict, list]:
  """The largest per-device micro-batch that fits, by compiling: train.grad_accum_steps is
  chosen so that micro-batches of that size make the config's global batch. Returns (the report
  of that compile, [(micro-batch, fits)] tried)."""
  devices = target.devices()
  mesh = train.make_mesh(config, devices=devices)
  per_device = config.train.batch_size // (mesh.shape["data"] * mesh.shape["fsdp"])
  candidates = [m for m in range(1, per_device + 1) if per_device % m == 0]
  tried, best = [], None
  low, high = 0, len(candidates) - 1
  while low <= high:  # memory grows with the micro-batch: bisect over its divisors
    middle = (low + high) // 2
    micro = candidates[middle]
    trial = ml_collections.ConfigDict(config.to_dict())
    trial.train.grad_accum_steps = per_device // micro
    try:
      report = compile_step(trial, target, devices)
      tried.append((micro, True))
      best, low = report, middle + 1
    except DoesNotFit:
      tried.append((micro, False))
      high = middle - 1
  if best is None:
    raise DoesNotFit(f"does not fit on {target.name}: not even a micro-batch of 1 sequence per device")
  return best, tried


def format_report(report: dict) -> str:
  """The report as the aligned table the command prints."""
  gib = lambda b: f"{b / 2 ** 30:.2f} GiB" if b >= 2 ** 30 else f"{b / 2 ** 20:.1f} MiB"
  m = report["per_device_bytes"]
  rows = [
      ("target", f"{report['target']} ({report['devices']} x {report['chip']})"),
      ("mesh", " x ".join(f"{k} {v}" for k, v in report["mesh"].items())),
      ("batch", f"{report['global_batch']} x {report['length']} tokens; {report['per_device_batch']} per device in "
                f"{report['grad_accum_steps']} micro-batch(es) of {report['per_device_micro_batch']}"),
      ("dtypes", f"student {report['student_dtype']}, teacher {report['teacher_dtype']}"),
      ("memory per device", f"{gib(m['total'])} of {gib(report['hbm_bytes'])} "
                            f"({'fits' if report['fits'] else 'does not fit'}): params {gib(m['params'])}, "
                            f"optimizer {gib(m['optimizer'])}, frozen {gib(m['frozen'])}, temp {gib(m['temp'])}"),
      ("FLOPs per step", f"{report['flops_per_step']:.3e} compiled, {report['flops_per_step_model']:.3e} model"),
      ("collectives", ", ".join(f"{k} {v}" for k, v in report["collectives"].items()) or "none"),
      ("collective bytes", f"{report['collective_bytes'] / 2 ** 20:,.1f} MiB per device"
                           + (f" (+ {report['network_bytes'] / 2 ** 20:,.1f} MiB across slices/nodes)"
                              if report["network_bytes"] else "")),
      ("roofline", ", ".join(f"{k} {v * 1e3:,.1f} ms" for k, v in report["roofline_seconds"].items())
                   + f": step >= {report['step_time_lower_bound_s'] * 1e3:,.1f} ms ({report['bound_by']})"),
      ("upper bounds", f"MFU {report['mfu_upper_bound']:.1%}, {report['tokens_per_second_upper_bound']:,.0f} "
                       "tokens/s" + (f", the paper's 3 epochs in >= {report['paper_hours_lower_bound']:,.1f} h"
                                     if report["job"] == "distill" else "")),
      ("compile", f"{report['compile_seconds']:.1f} s (jax {report['jax_version']}, libtpu "
                  f"{report['libtpu_version']}, CUDA plugin {report['cuda_plugin_version']})"),
  ]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
