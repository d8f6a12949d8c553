"""The CPU roofline of scripts/benchmark.py: how far float32 speed can go on this machine.

The matrix products of these models at 1,024 tokens run alone in each framework (GFLOP/s);
beside them, the model FLOP rate each framework reaches end to end (counts from
distilbert_jax/flops.py) and the rate that a target ratio over PyTorch would need.
"""
from __future__ import annotations

import numpy as np

from bench_common import median, our_config, time_side_by_side

ROOFLINE_MATMULS = ((1024, 768, 768), (1024, 768, 3072), (1024, 3072, 768), (1024, 768, 30522))
# The speed-ups over PyTorch that the targets ask for (BENCHMARKS.md): forward, distillation step.
FORWARD_TARGET, STEP_TARGET = 1.5, 1.6


def roofline_section(reps: int, results: dict) -> dict:
  import jax
  import jax.numpy as jnp
  import torch
  from distilbert_jax import flops

  matmuls = []
  product = jax.jit(jnp.dot)
  for m, k, n in ROOFLINE_MATMULS:
    rs = np.random.RandomState(0)
    a, b = rs.randn(m, k).astype(np.float32), rs.randn(k, n).astype(np.float32)
    ja, jb = jax.device_put(a), jax.device_put(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)

    def theirs(ta=ta, tb=tb):
      with torch.inference_mode():
        return ta @ tb
    times = time_side_by_side({"ours": lambda: jax.block_until_ready(product(ja, jb)), "torch": theirs}, reps)
    flop = 2.0 * m * k * n
    matmuls.append(dict(shape=f"[{m},{k}] x [{k},{n}]", ours_s=median(times["ours"]), torch_s=median(times["torch"]),
                        ours_gflops=flop / median(times["ours"]) / 1e9, torch_gflops=flop / median(times["torch"]) / 1e9))
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
