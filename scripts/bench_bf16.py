"""The bfloat16 sections of scripts/benchmark.py (`--bf16`): inference and the distillation step
in bfloat16 on CPU, ours against transformers' PyTorch models, with float32 beside them.

Our bfloat16 is the library's: every matrix product takes bfloat16 operands and accumulates in
float32 (models/layers.py), compiled with `models.compiler_options(head, dtype=...)`. Two settings
of it: bfloat16 compute with float32 parameters (what training does with the student), and
bfloat16 parameters (what inference and the frozen teacher use). PyTorch's two bfloat16 paths:
the model's weights converted with `model.to(torch.bfloat16)`, and the float32 model under
`torch.autocast("cpu", dtype=torch.bfloat16)`. Every contender holds the same weights.

Accuracy stands next to speed: the relative difference of each bfloat16 output from our float32
output, max|bf16 - f32| / max|f32|, over the whole output (hidden states, or MLM logits).

Before any PyTorch bfloat16 work, a child process runs PyTorch's bfloat16 kernels once: on a VM
that advertises AMX without enabling it, oneDNN's bfloat16 matrix product dies with SIGILL. Where
the probe fails, ours is held against PyTorch float32 only, and the report says why.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import signal
import subprocess
import sys

import numpy as np

from bench_common import (ARCHS, ENTRY, ROOT, count_params, cpu_name, distillation_config, make_input_ids, median,
                          our_config, our_params_from_torch, time_side_by_side, torch_model, torch_state_dict)
from bench_training import JaxDistillation, TorchDistillation, check_same_weights, teacher_from_state_dict

BF16_SHAPES = ((8, 128), (32, 128))
LONG_SHAPES = ((8, 512),)  # float32 only: our blocked attention against PyTorch's SDPA
FIELD = {"base": "last_hidden_state", "masked_lm": "logits"}


# ===================================================================================== the processor
def cpuinfo_fields() -> dict:
  """Vendor, family, model, model name and flags of the first processor in /proc/cpuinfo (what
  lscpu reports as Vendor ID, CPU family and Model); empty where there is none."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      text = f.read()
  except OSError:
    return {}
  fields = {}
  for line in text.split("\n\n")[0].splitlines():
    key, _, value = line.partition(":")
    fields[key.strip()] = value.strip()
  return fields


def processor_info() -> dict:
  """The processor and its bfloat16 instructions, and what the library decides from them."""
  from distilbert_jax import models
  fields = cpuinfo_fields()
  flags = set(fields.get("flags", "").split())
  return dict(name=cpu_name(), vendor=fields.get("vendor_id"), family=fields.get("cpu family"),
              model=fields.get("model"), cores=len(os.sched_getaffinity(0)),
              flags={f: f in flags for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")},
              native_bfloat16=models.cpu_has_native_bfloat16(), auto_dtype=str(models.resolve_dtype("auto")))


def torch_bf16_probe_child() -> dict:
  """In a child process: PyTorch's bfloat16 kernels once each (a matrix product large enough for
  oneDNN's AMX or AVX-512 BF16 kernels, a bfloat16 Linear and attention, an autocast forward and
  backward). A processor that lacks an instruction they pick kills this process."""
  import torch
  torch.manual_seed(0)
  a, b = torch.randn(1024, 768), torch.randn(768, 768)
  product = a.bfloat16() @ b.bfloat16()
  layer = torch.nn.Linear(768, 768)
  with torch.inference_mode():
    copy.deepcopy(layer).to(torch.bfloat16)(a.bfloat16())
    q = torch.randn(2, 12, 128, 64, dtype=torch.bfloat16)
    torch.nn.functional.scaled_dot_product_attention(q, q, q)
  with torch.autocast("cpu", dtype=torch.bfloat16):
    loss = layer(a).float().square().mean()
  loss.backward()
  error = float((product.float() - a @ b).abs().max() / (a @ b).abs().max())
  return dict(ok=True, cpu_capability=torch.backends.cpu.get_cpu_capability(),
              mkldnn_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), matmul_rel_diff=error)


def torch_bf16_probe() -> dict:
  """{"ok": True, ...} where PyTorch's bfloat16 path runs here; else {"ok": False, "reason": ...}."""
  import json
  try:
    result = subprocess.run([sys.executable, str(ENTRY), "--torch-bf16-probe"], capture_output=True, text=True,
                            check=False, cwd=ROOT, timeout=600)
  except subprocess.TimeoutExpired:
    return dict(ok=False, reason="the probe process did not finish in 10 minutes")
  if result.returncode < 0:  # killed by a signal: SIGILL where an instruction is not enabled
    name = signal.Signals(-result.returncode).name
    return dict(ok=False, reason=f"the probe process (a bfloat16 torch.matmul) died with {name}")
  lines = [line for line in result.stdout.splitlines() if line.startswith("TORCHBF16 ")]
  if result.returncode or not lines:
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return dict(ok=False, reason=f"the probe process failed (exit status {result.returncode}): {tail}")
  return json.loads(lines[-1][len("TORCHBF16 "):])


# ===================================================================================== inference
def relative_difference(output, reference: np.ndarray, scale: float) -> float:
  """max|output - reference| / scale, with output in float32 (a jax array or torch tensor)."""
  if hasattr(output, "detach"):
    output = output.detach().float().numpy()
  return float(np.abs(np.asarray(output, np.float32) - reference).max() / scale)


def _build(arch: str, head: str, torch_bf16: bool, long: bool):
  """Contenders' callables for one architecture and head: {name: forward(ids, mask)} over the
  same weights (a transformers model copied into ours)."""
  import jax
  import jax.numpy as jnp
  import torch
  from distilbert_jax import models

  t_model = torch_model(arch, head)
  config = our_config(arch)
  params = our_params_from_torch(t_model, config, head)
  field = FIELD[head]

  def ours(model, dtype, weights):
    forward = jax.jit(lambda p, ids, mask: getattr(model.apply({"params": p}, ids, attention_mask=mask), field),
                      compiler_options=models.compiler_options(head, dtype=dtype))
    return lambda ids, mask: jax.block_until_ready(forward(weights, ids, mask))

  def theirs(model, autocast=False):
    def run(ids, mask):
      with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return getattr(model(input_ids=ids, attention_mask=mask), field)
    return run

  if long:  # float32 at length 512 with the library's blocked attention (faster there than the plain one)
    blocked = dataclasses.replace(config, attention_impl="blocked")
    built = {"ours/f32_blocked": ours(models.get_model(blocked, head), jnp.float32, params)}
  else:
    bf16 = jnp.bfloat16
    built = {"ours/f32": ours(models.get_model(config, head), jnp.float32, params)}
    built["ours/bf16"] = ours(models.get_model(config, head, dtype=bf16), bf16, params)
    bf16_params = jax.tree.map(lambda x: jnp.asarray(x, bf16), params)
    built["ours/bf16_params"] = ours(models.get_model(config, head, dtype=bf16, param_dtype=bf16), bf16, bf16_params)
  built["torch/f32"] = theirs(t_model)
  if torch_bf16 and not long:
    built["torch/bf16_weights"] = theirs(copy.deepcopy(t_model).to(torch.bfloat16))
    built["torch/autocast"] = theirs(t_model, autocast=True)
  return built, count_params(params)


def bf16_inference_section(shapes, heads, reps: int, torch_bf16: bool, long_shapes=()) -> list[dict]:
  """One row per (arch, head, shape): every contender's median time, the speed ratios, and each
  output's relative difference from our float32 output. `long_shapes` (base head only): float32
  rows, our forward with the blocked attention against PyTorch's."""
  import jax
  import torch

  rows = []
  plan = [(head, tuple(shapes), False) for head in heads] + ([("base", tuple(long_shapes), True)] if long_shapes else [])
  for head, head_shapes, long in plan:
    built = {arch: _build(arch, head, torch_bf16, long) for arch in ARCHS}
    for batch, length in head_shapes:
      ids = make_input_ids(batch, length)
      j_ids, j_mask = jax.device_put(ids), jax.device_put(np.ones_like(ids))
      t_ids, t_mask = torch.from_numpy(ids).long(), torch.from_numpy(np.ones_like(ids)).long()
      contenders, accuracy = {}, {}
      for arch, (forwards, _) in built.items():
        # The accuracy pass is also every contender's warm-up run (compilation, oneDNN primitives).
        first = next(iter(forwards))  # our float32 forward: the reference of every other output
        reference = np.asarray(forwards[first](j_ids, j_mask), np.float32)
        scale = float(np.abs(reference).max())
        accuracy[arch] = {}
        for name, forward in forwards.items():
          on_jax = name.startswith("ours/")
          call = (lambda f=forward: f(j_ids, j_mask)) if on_jax else (lambda f=forward: f(t_ids, t_mask))
          contenders[f"{arch}:{name}"] = call
          if name != first:
            accuracy[arch][name] = relative_difference(call(), reference, scale)
        accuracy[arch]["torch/f32_max_abs_diff"] = accuracy[arch]["torch/f32"] * scale
        del reference
      times = time_side_by_side(contenders, reps, warmup=0)
      for arch, (forwards, n_params) in built.items():
        t = {name: median(times[f"{arch}:{name}"]) for name in forwards}
        row = dict(arch=arch, head=head, batch=batch, length=length, dtype="float32" if long else "bfloat16",
                   times_s=t, all_times={n: times[f"{arch}:{n}"] for n in forwards}, rel_diff=accuracy[arch],
                   params=n_params, load_average=os.getloadavg()[0])
        if long:
          row["f32_vs_torch_f32"] = t["torch/f32"] / t["ours/f32_blocked"]
        else:
          row["f32_vs_torch_f32"] = t["torch/f32"] / t["ours/f32"]
          row["bf16_vs_torch_f32"] = t["torch/f32"] / t["ours/bf16_params"]
          if "torch/bf16_weights" in t:
            row["bf16_vs_torch_bf16"] = t["torch/bf16_weights"] / t["ours/bf16_params"]
            row["bf16_vs_torch_autocast"] = t["torch/autocast"] / t["ours/bf16"]
        rows.append(row)
      print(f"  bf16 inference {head} {batch}x{length}: " + "; ".join(
          f"{r['arch']} " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items() if k.endswith(("_vs_torch_f32",
                                                                                           "_vs_torch_bf16")))
          for r in rows[-len(ARCHS):]), flush=True)
    del built
  return rows


def student_teacher_bf16(rows: list[dict]) -> list[dict]:
  """Our DistilBERT against our BERT at length 128, float32 and bfloat16 parameters, from the
  same side-by-side loops."""
  out = []
  by_key = {(r["arch"], r["head"], r["batch"], r["length"], r["dtype"]): r for r in rows}
  for (arch, head, batch, length, dtype), student in by_key.items():
    if arch != "distilbert" or dtype != "bfloat16":
      continue
    teacher = by_key[("bert", head, batch, length, dtype)]
    ratio = lambda n: teacher["times_s"][n] / student["times_s"][n]
    out.append(dict(head=head, batch=batch, length=length, f32=ratio("ours/f32"), bf16=ratio("ours/bf16_params"),
                    torch_f32=ratio("torch/f32"), param_ratio=student["params"] / teacher["params"]))
  return out


# ===================================================================================== distillation step
TRAINING_ORDER = ("ours/f32", "torch/f32", "ours/bf16", "torch/autocast", "ours/bf16_teacher")
# ours/bf16_teacher: only the teacher in bfloat16, the student in float32 (config fields too); it
# shows how much of the bfloat16 gain the student's bfloat16 backward keeps or loses on CPU.
TRAINING_BASELINES = {"ours/f32": "torch/f32", "ours/bf16": "torch/autocast", "ours/bf16_teacher": "torch/autocast"}
LOSS_KEYS = ("loss", "loss_ce", "loss_mlm", "loss_cos")


# Where the library's options for a bfloat16 step fail to run: YNNPACK for matrix products only.
# With XLA's default CPU options, the bfloat16 student's step compiles but stops with
# "Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32": XLA leaves bfloat16 products
# unconverted for YNNPACK, but YNNPACK does not take the attention's backward products, which then
# reach a kernel without bfloat16. With YNNPACK fusing only matrix products, the step runs.
def reference_name(name: str) -> str:
  """The float32 step of the same framework, whose first-step losses a bfloat16 step's are held to."""
  return name.split("/")[0] + "/f32"


def _first_losses(step) -> dict:
  return {k: float(v) for k, v in step.losses(step.run()).items() if k in LOSS_KEYS}


def bf16_training_section(batch: int, length: int, reps: int, torch_bf16: bool, overrides: dict) -> dict:
  """The library's distillation step in float32 and in bfloat16 (teacher in bfloat16 with
  bfloat16 parameters; student computing in bfloat16 on float32 master weights), against the
  original trainer's PyTorch step in float32 and under torch.autocast(bfloat16), on the same
  weights; beside them our step with only the teacher in bfloat16."""
  import torch
  from distilbert_jax import convert, models

  teacher_sd = torch_state_dict(torch_model("bert", "masked_lm"))
  config32 = distillation_config(batch, length, **overrides)
  config16 = distillation_config(batch, length, **{**overrides, "teacher.dtype": "bfloat16",
                                                   "student.dtype": "bfloat16"})
  teacher32 = teacher_from_state_dict(config32, teacher_sd)
  # One float32 copy of the teacher's weights: the bfloat16 job casts it once, as distill.make_job.
  model16 = models.get_model(teacher32[2], config16.teacher.head, dtype=models.resolve_dtype(config16.teacher.dtype))

  # First steps (also the warm-up): ours share one masking draw (same config seed); PyTorch's two
  # draw theirs from one reseeded generator, so that bfloat16 losses compare with float32 ones.
  steps, first, compile_s = {}, {}, {}
  ours32 = steps["ours/f32"] = JaxDistillation(config32, teacher32)
  compile_s["ours/f32"] = ours32.compile()
  student_sd = convert.params_to_state_dict(ours32.student_params, ours32.student_config, "masked_lm")
  student_hf = {k: v for k, v in ours32.student_config.to_hf_dict().items() if k not in ("model_type", "architectures")}
  steps["torch/f32"] = TorchDistillation(batch, length, teacher_sd, student_sd, student_hf)
  if torch_bf16:
    steps["torch/autocast"] = TorchDistillation(batch, length, teacher_sd, student_sd, student_hf, autocast=True)
  del teacher_sd
  checks = check_same_weights(ours32, steps["torch/f32"])
  first["ours/f32"] = _first_losses(ours32)
  ours16 = steps["ours/bf16"] = JaxDistillation(config16, (model16, teacher32[1], teacher32[2]))
  compile_s["ours/bf16"] = ours16.compile()
  first["ours/bf16"] = _first_losses(ours16)
  config_teacher16 = distillation_config(batch, length, **{**overrides, "teacher.dtype": "bfloat16"})
  steps["ours/bf16_teacher"] = JaxDistillation(config_teacher16, (model16, teacher32[1], teacher32[2]))
  compile_s["ours/bf16_teacher"] = steps["ours/bf16_teacher"].compile()
  first["ours/bf16_teacher"] = _first_losses(steps["ours/bf16_teacher"])
  for name in ("torch/f32", "torch/autocast"):
    if name in steps:
      torch.manual_seed(1)
      first[name] = _first_losses(steps[name])

  order = [n for n in TRAINING_ORDER if n in steps]
  times = time_side_by_side({n: steps[n].run for n in order}, reps, warmup=0)
  rows = []
  for name in order:
    step_s = median(times[name])
    row = dict(name=name, step_s=step_s, tokens_per_s=batch * length / step_s, times=times[name],
               first_step_losses=first[name], compile_s=compile_s.get(name), load_average=os.getloadavg()[0])
    base = TRAINING_BASELINES.get(name)
    if base in times:
      row["vs_torch"], row["torch_baseline"] = median(times[base]) / step_s, base
    if name.startswith("ours/") and "torch/f32" in times:
      row["vs_torch_f32"] = median(times["torch/f32"]) / step_s
    reference = first[reference_name(name)]
    if name != reference_name(name):
      row["loss_rel_diff"] = max(abs(first[name][k] - reference[k]) / abs(reference[k]) for k in LOSS_KEYS)
    rows.append(row)
  print("  bf16 training: " + ", ".join(f"{r['name']} {r['step_s']:.2f}s" for r in rows), flush=True)
  return dict(batch=batch, length=length, rows=rows, checks=checks, bf16_compiler_options=ours16.compiler_options,
              config_overrides={k: str(v) for k, v in overrides.items()})


# ===================================================================================== targets
def bf16_targets(results: dict) -> list[dict]:
  """The speed targets for bfloat16 on a CPU with bfloat16 dot products, each with what this run
  measured and whether it meets it; a target with no measurement says why."""
  rows = [r for r in results.get("bf16_inference", []) if r["dtype"] == "bfloat16"]
  long_rows = [r for r in results.get("bf16_inference", []) if r["dtype"] == "float32"]
  probe = results.get("torch_bf16_probe") or {}
  out = []

  def add(target, values, threshold, what=None):
    if not values:
      out.append(dict(target=target, measured=what or "not measured", met=None))
      return
    low = min(v for _, v in values)
    text = "; ".join(f"{k} {v:.2f}x" for k, v in values)
    out.append(dict(target=target, measured=text, worst=low, met=low >= threshold))

  label = lambda r: f"{r['arch']} {r['head']} {r['batch']}x{r['length']}"
  no_torch_bf16 = None if probe.get("ok", True) else f"PyTorch's bfloat16 path fails here: {probe.get('reason')}"
  add("inference bf16 >= 1.0x PyTorch bf16 (model.to(bfloat16))",
      [(label(r), r["bf16_vs_torch_bf16"]) for r in rows if "bf16_vs_torch_bf16" in r], 1.0, no_torch_bf16)
  add("inference bf16 >= 1.8x PyTorch f32", [(label(r), r["bf16_vs_torch_f32"]) for r in rows], 1.8)
  add("inference f32 >= 1.0x PyTorch f32 (8x512: blocked attention)",
      [(label(r), r["f32_vs_torch_f32"]) for r in rows + long_rows], 1.0)
  section = results.get("bf16_training") or {}
  bf16_step = {r["name"]: r for r in section.get("rows", [])}.get("ours/bf16", {})
  shape = f"{section.get('batch')}x{section.get('length')}"
  add("distillation step bf16 >= 1.0x PyTorch autocast step",
      [(shape, bf16_step["vs_torch"])] if "vs_torch" in bf16_step else [], 1.0, no_torch_bf16)
  add("distillation step bf16 >= 1.6x PyTorch f32 step",
      [(shape, bf16_step["vs_torch_f32"])] if "vs_torch_f32" in bf16_step else [], 1.6)
  pairs = results.get("bf16_student_teacher", [])
  add("student vs teacher >= 1.9x at length 128 (ours, base models, f32 and bf16)",
      [(f"{p['batch']}x{p['length']} {d}", p[d]) for p in pairs if p["head"] == "base" for d in ("f32", "bf16")], 1.9)
  return out
