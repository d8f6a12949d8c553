"""Compile levers of scripts/benchmark.py (`--levers`, `--xla-flag-sweep`), each against our
setting. Every lever is a setting of the library or of JAX, never a change to the library's
code: config fields (layers scanned or unrolled, attention implementation, rematerialisation,
teacher dtype), the per-program XLA options of `models.compiler_options`, buffer donation, the
default matmul precision, and XLA_FLAGS (one process per setting, since XLA reads them once).
"""
from __future__ import annotations

import os
import time

from bench_common import (distillation_config, make_input_ids, median, our_config, our_params_from_torch,
                          run_child, time_side_by_side, torch_model, torch_state_dict, unrolled_xla)

NO_YNNPACK_FUSIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def levers_section(reps: int) -> dict:
  """Each lever against our chosen setting, alternated in one process: inference (DistilBERT-base
  at 8x128 and 32x128, the masked-LM head at 1x128) and the distillation step (8x128)."""
  import jax
  import jax.numpy as jnp
  from distilbert_jax import models
  from bench_training import JaxDistillation, teacher_from_state_dict

  out = {}
  base_model = torch_model("distilbert", "base")
  for batch, length in ((8, 128), (32, 128)):
    ids = jax.device_put(make_input_ids(batch, length))
    mask = jnp.ones_like(ids)
    contenders = {}

    def add(name, config, precision=None, options=None):
      params = our_params_from_torch(base_model, config, "base")
      model = models.get_model(config, "base")
      forward = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m),
                        compiler_options=models.compiler_options("base") if options is None else options)
      with jax.default_matmul_precision(precision):
        compiled = forward.lower(params, ids, mask).compile()  # traced here, so the precision applies
      contenders[name] = lambda: jax.block_until_ready(compiled(params, ids, mask))

    add("unrolled/xla (ours)", our_config("distilbert"))
    add("XLA's default CPU options (YNNPACK fusions on)", our_config("distilbert"), options={})
    add("scan over layers", our_config("distilbert", scan_layers=True))
    add("jax.nn.dot_product_attention", our_config("distilbert", attention_impl="dot_product"))
    add("matmul precision bfloat16", our_config("distilbert"), precision="bfloat16")
    times = time_side_by_side(contenders, reps)
    out[f"inference_distilbert_base_{batch}x{length}"] = {n: dict(median_s=median(t), times=t) for n, t in times.items()}
    print(f"  levers inference {batch}x{length}: " + ", ".join(f"{n} {median(t):.3f}s" for n, t in times.items()),
          flush=True)
    contenders.clear()

  # The masked-LM forward at 1 x 128: why compiler_options("masked_lm") keeps XLA's defaults.
  config = our_config("distilbert")
  params = our_params_from_torch(torch_model("distilbert", "masked_lm"), config, "masked_lm")
  model = models.get_model(config, "masked_lm")
  ids = jax.device_put(make_input_ids(1, 128))
  mask = jnp.ones_like(ids)
  contenders = {}
  for name, options in (("XLA's default CPU options (ours for masked_lm)", models.compiler_options("masked_lm")),
                        ("YNNPACK fusions off", NO_YNNPACK_FUSIONS)):
    compiled = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m),
                       compiler_options=options).lower(params, ids, mask).compile()
    contenders[name] = lambda compiled=compiled: jax.block_until_ready(compiled(params, ids, mask))
  times = time_side_by_side(contenders, reps)
  out["inference_distilbert_masked_lm_1x128"] = {n: dict(median_s=median(t), times=t) for n, t in times.items()}
  print("  levers masked_lm 1x128: " + ", ".join(f"{n} {median(t):.3f}s" for n, t in times.items()), flush=True)
  contenders.clear()

  teacher_sd = torch_state_dict(torch_model("bert", "masked_lm"))
  scan_dot_product = {"teacher.scan_layers": True, "student.scan_layers": True,
                      "teacher.attention_impl": "dot_product", "student.attention_impl": "dot_product"}
  steps, teachers = {}, {}
  for name, overrides, donate, options in (
      ("unrolled/xla (ours)", unrolled_xla(), True, None),
      ("scan/dot_product (configs/distilbert_base.py)", scan_dot_product, True, None),
      ("YNNPACK fusions off", unrolled_xla(), True, NO_YNNPACK_FUSIONS),
      ("student remat 'dots'", {**unrolled_xla(), "student.remat_policy": "dots"}, True, None),
      ("teacher in bfloat16", {**unrolled_xla(), "teacher.dtype": "bfloat16"}, True, None),
      ("no buffer donation", unrolled_xla(), False, None)):
    config = distillation_config(8, 128, **overrides)
    # Variants whose teacher compiles alike share one copy of its weights.
    key = tuple(config.teacher[f] for f in ("scan_layers", "attention_impl", "remat_policy", "dtype"))
    if key not in teachers:
      teachers[key] = teacher_from_state_dict(config, teacher_sd)
    step = JaxDistillation(config, teachers[key], donate=donate, compiler_options=options)
    compile_s = step.compile()
    step.run()
    steps[name] = (step, compile_s)
  times = time_side_by_side({n: s.run for n, (s, _) in steps.items()}, reps, warmup=0)
  out["training_8x128"] = {n: dict(median_s=median(t), compile_s=steps[n][1], times=t) for n, t in times.items()}
  print("  levers training: " + ", ".join(f"{n} {median(t):.2f}s" for n, t in times.items()), flush=True)
  return out


# ===================================================================================== XLA flags
FLAG_SETTINGS = (
    "",
    "--xla_cpu_experimental_ynn_fusion_type=",  # no YNNPACK fusions: dots go to Eigen
    "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_experimental_xnn_fusion_type=dot",
    "--xla_cpu_experimental_onednn_fusion_type=dot",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_use_xnnpack=false",
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_use_thunk_runtime=false",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_prefer_vector_width=512",
    "--xla_cpu_enable_concurrency_optimized_scheduler=false",
)
FLAG_WORKLOADS = (("base", 8, 128), ("masked_lm", 8, 128), ("base", 32, 128))


def workload_names() -> list[str]:
  return [f"{head} {batch}x{length}" for head, batch, length in FLAG_WORKLOADS]


def flag_probe(reps: int) -> dict:
  """In a process started with XLA_FLAGS: DistilBERT-base forwards (unrolled, XLA attention),
  compiled with XLA's defaults so that only the flags differ."""
  import jax
  import jax.numpy as jnp
  from distilbert_jax import models, train
  config = our_config("distilbert")
  out = {}
  for head, batch, length in FLAG_WORKLOADS:
    model = models.get_model(config, head)
    params = train.init_params(model, 0)
    ids = jax.device_put(make_input_ids(batch, length))
    mask = jnp.ones_like(ids)
    forward = jax.jit(lambda p, i, m, model=model: model.apply({"params": p}, i, attention_mask=m))
    start = time.perf_counter()
    compiled = forward.lower(params, ids, mask).compile()
    compile_s = time.perf_counter() - start
    times = time_side_by_side({"f": lambda: jax.block_until_ready(compiled(params, ids, mask))}, reps)["f"]
    out[f"{head} {batch}x{length}"] = dict(compile_s=compile_s, median_s=median(times), times=times)
  out["load_average"] = os.getloadavg()[0]
  return out


def xla_flag_sweep(reps: int, rounds: int = 2) -> list[dict]:
  """One process per flag setting, the settings alternated over `rounds` rounds (forward, then
  reversed); a flag this jaxlib does not know makes its process fail, recorded as such."""
  results = {flags: [] for flags in FLAG_SETTINGS}
  errors = {}
  for r in range(rounds):
    for flags in (FLAG_SETTINGS if r % 2 == 0 else FLAG_SETTINGS[::-1]):
      probe = run_child(["--flag-probe", "--reps", str(reps)], "FLAGPROBE", env=dict(os.environ, XLA_FLAGS=flags))
      if "error" in probe:
        errors[flags] = (probe["error"].strip().splitlines() or ["no output"])[-1][:200]
        continue
      results[flags].append(probe)
      print(f"  XLA_FLAGS={flags!r}: " + ", ".join(
          f"{w} {probe[w]['median_s'] * 1e3:.0f} ms" for w in workload_names()), flush=True)
  rows = []
  base = {w: median([p[w]["median_s"] for p in results[""]]) for w in workload_names()} if results[""] else None
  for flags in FLAG_SETTINGS:
    if not results[flags]:
      rows.append(dict(flags=flags, error=errors.get(flags, "no result")))
      continue
    row = dict(flags=flags or "(none)", load_average=max(p["load_average"] for p in results[flags]))
    for w in workload_names():
      m = median([p[w]["median_s"] for p in results[flags]])
      row[w] = dict(median_s=m, speedup_vs_default=base[w] / m if base else None,
                    compile_s=median([p[w]["compile_s"] for p in results[flags]]),
                    process_medians=[p[w]["median_s"] for p in results[flags]])
    rows.append(row)
  return rows
