"""The CPU roofline of scripts/benchmark.py: how far float32 speed can go on this machine.

The matrix products of these models at 1,024 tokens run alone in each framework (GFLOP/s);
beside them, the model FLOP rate each framework reaches end to end (counts from
distilbert_jax/hardware/flops.py) and the rate that a target ratio over PyTorch would need.
"""
from __future__ import annotations

import numpy as np

from bench_common import median, our_config, time_side_by_side

ROOFLINE_MATMULS = ((1024, 768, 768), (1024, 768, 3072), (1024, 3072, 768), (1024, 768, 30522))
# The speed-ups over PyTorch that the targets ask for (BENCHMARKS.md): forward, distillation step.
FORWARD_TARGET, STEP_TARGET = 1.5, 1.6


def matmul_rates(reps: int, dtype: str = "float32", torch_too: bool = True) -> list[dict]:
  """Each framework's matrix products at the models' shapes (1,024 tokens), alone. float32:
  jnp.dot with XLA's default options against torch.matmul. bfloat16: the models' own product
  (layers.einsum: bfloat16 operands, float32 accumulation, a bfloat16 result) with the options
  the models compile with (models.compiler_options("base", dtype=bfloat16)), against torch.matmul
  of bfloat16 tensors; without `torch_too` (PyTorch's bfloat16 fails here) ours alone."""
  import jax
  import jax.numpy as jnp
  import torch
  from distilbert_jax import models
  from distilbert_jax.models import layers

  if dtype == "float32":
    product = jax.jit(jnp.dot)
  else:
    product = jax.jit(lambda a, b: layers.einsum("mk,kn->mn", a, b),
                      compiler_options=models.compiler_options("base", dtype=jnp.bfloat16))
  out = []
  for m, k, n in ROOFLINE_MATMULS:
    rs = np.random.RandomState(0)
    a, b = rs.randn(m, k).astype(np.float32), rs.randn(k, n).astype(np.float32)
    ja, jb = jax.device_put(jnp.asarray(a, dtype)), jax.device_put(jnp.asarray(b, dtype))
    ta, tb = torch.from_numpy(a).to(getattr(torch, dtype)), torch.from_numpy(b).to(getattr(torch, dtype))

    def theirs(ta=ta, tb=tb):
      with torch.inference_mode():
        return ta @ tb
    contenders = {"ours": lambda ja=ja, jb=jb: jax.block_until_ready(product(ja, jb))}
    if torch_too:
      contenders["torch"] = theirs
    times = time_side_by_side(contenders, reps)
    flop = 2.0 * m * k * n
    row = dict(shape=f"[{m},{k}] x [{k},{n}]", dtype=dtype, ours_s=median(times["ours"]),
               ours_gflops=flop / median(times["ours"]) / 1e9)
    if torch_too:
      row.update(torch_s=median(times["torch"]), torch_gflops=flop / median(times["torch"]) / 1e9)
    out.append(row)
  return out


def roofline_section(reps: int, results: dict) -> dict:
  from distilbert_jax.hardware import flops

  matmuls = matmul_rates(reps)
  best = max(max(r["ours_gflops"], r["torch_gflops"]) for r in matmuls)

  workloads = []
  for r in results.get("inference", []):
    if r["head"] != "base" or r["arch"] != "distilbert" or (r["batch"], r["length"]) not in ((8, 128), (32, 128)):
      continue
    gflop = flops.forward_flops_per_token(our_config("distilbert"), r["length"], with_mlm_head=False) \
        * r["batch"] * r["length"] / 1e9
    workloads.append(dict(name=f"DistilBERT-base forward {r['batch']}x{r['length']}", gflop=gflop,
                          target=FORWARD_TARGET, ours_gflops=gflop / r["ours_s"], torch_gflops=gflop / r["torch_s"]))
  training = results.get("training") or {}
  rows = {row["name"]: row for row in training.get("rows", [])}
  if "ours" in rows and "torch" in rows:
    batch, length = training["batch"], training["length"]
    per_token = flops.distillation_flops_per_token(our_config("distilbert"), our_config("bert"), length, True, True)
    gflop = per_token * batch * length / 1e9
    workloads.append(dict(name=f"distillation step {batch}x{length}", gflop=gflop, target=STEP_TARGET,
                          ours_gflops=gflop / rows["ours"]["step_s"], torch_gflops=gflop / rows["torch"]["step_s"]))
  for w in workloads:
    w["needed_gflops"] = w["target"] * w["torch_gflops"]
    w["needed_vs_best_matmul"] = w["needed_gflops"] / best
  print(f"  roofline: best float32 matmul {best:.0f} GFLOP/s; " + ", ".join(
      f"{w['name']} needs {w['needed_gflops']:.0f}" for w in workloads), flush=True)
  return dict(matmuls=matmuls, best_matmul_gflops=best, workloads=workloads)
