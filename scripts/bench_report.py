"""The Markdown report of scripts/benchmark.py, from its JSON results (the tables in
BENCHMARKS.md are this function's output)."""
from __future__ import annotations

from bench_common import steal_percent
from bench_levers import workload_names


def ms(seconds: float) -> str:
  return f"{seconds * 1e3:,.0f}"


def format_report(results: dict) -> str:
  """The report printed at the end of a run; every section present in `results` gets its table."""
  env = results["environment"]
  lines = [f"Machine: {env['cpu']}, {env['cores']} cores; jax {env['jax']} ({env['backend']}), torch "
           f"{env['torch']} with torch.get_num_threads() = {env['torch_threads']}, transformers "
           f"{env['transformers']} (attention: {env['torch_attention']}); XLA_FLAGS={env['xla_flags']!r}; "
           f"malloc: {env.get('malloc', 'system (glibc)')}; "
           f"load average {env['load_average_start'][0]:.1f} at start, {env['load_average_end'][0]:.1f} at end; "
           f"CPU time stolen by the hypervisor during the run: "
           f"{'-' if steal_percent(env) is None else f'{steal_percent(env):.1f}%'}; "
           f"{results['reps']} timed runs per figure after 1 warm-up (median); wall time "
           f"{results['wall_s'] / 60:.1f} min.", ""]
  loads = [r["load_average"] for r in results.get("inference", []) + (results.get("training") or {}).get("rows", [])
           + results.get("bf16_inference", []) + (results.get("bf16_training") or {}).get("rows", [])]
  loads += [env["load_average_start"][0], env["load_average_end"][0]]
  if max(loads) > env["cores"] + 0.5:  # our own run keeps every core busy
    lines += [f"**Warning: the machine was shared (1-minute load average up to {max(loads):.1f} on {env['cores']} "
              "cores; `load` column).** Co-tenant load slows PyTorch more than XLA (an OpenMP parallel region "
              "waits for its slowest thread at every op; XLA's thread pool splits work into many small tasks), "
              "so ratios measured under load overstate ours. Re-run on a quiet machine.", ""]
  if results.get("inference"):
    lines += ["### 1. Inference, float32, ours (jit) vs transformers PyTorch (inference_mode)", "",
              "| model | head | batch x length | ours ms | PyTorch ms | speed-up | ours tokens/s | max abs diff | load |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["inference"]:
      diff = f"{r['max_abs_diff']:.1e}" if r["max_abs_diff"] is not None else "-"
      lines.append(f"| {r['arch']} | {r['head']} | {r['batch']}x{r['length']} | {ms(r['ours_s'])} | "
                   f"{ms(r['torch_s'])} | **{r['speedup']:.2f}x** | {r['ours_tokens_per_s']:,.0f} | {diff} | "
                   f"{r['load_average']:.1f} |")
    lines += ["", "### 2. Student vs teacher (ours): DistilBERT-base vs BERT-base", "",
              "| head | batch x length | DistilBERT ms | BERT ms | throughput ratio | (PyTorch's ratio) | "
              "parameters | param ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["student_teacher"]:
      lines.append(f"| {r['head']} | {r['batch']}x{r['length']} | {ms(r['student_s'])} | {ms(r['teacher_s'])} | "
                   f"**{r['throughput_ratio']:.2f}x** | {r['torch_throughput_ratio']:.2f}x | "
                   f"{r['student_params'] / 1e6:.1f}M / {r['teacher_params'] / 1e6:.1f}M | "
                   f"{r['param_ratio']:.2f} ({1 - r['param_ratio']:.0%} fewer) |")
  if results.get("training"):
    t = results["training"]
    lines += ["", f"### 3. Distillation step, float32, batch {t['batch']} x {t['length']} "
              f"(BERT-base teacher, DistilBERT-base student)", "",
              "| step | ms | tokens/s | vs PyTorch | compile s | peak RSS (own process) | load |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    memory = results.get("memory") or {}
    for r in t["rows"]:
      ratio = f"**{r['vs_torch']:.2f}x** vs {r['torch_baseline']}" if "vs_torch" in r else "-"
      compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") else "-"
      mem = memory.get({"ours": "jax", "torch": "torch"}.get(r["name"], ""), {})
      peak = f"{mem['peak_rss'] / 2**30:.2f} GiB" if "peak_rss" in mem else "-"
      lines.append(f"| {r['name']} | {ms(r['step_s'])} | {r['tokens_per_s']:,.0f} | {ratio} | {compile_s} | {peak} | "
                   f"{r['load_average']:.1f} |")
    lines.append("")
    lines.append("Same weights: " + ", ".join(f"{k} {v:.1e}" for k, v in t["checks"].items()) + ".")
    if t.get("check_failures"):
      lines.append("**Checks failed: " + "; ".join(t["check_failures"]) + ".**")
    lines.append("First-step losses: " + "; ".join(
        f"{r['name']} " + " ".join(f"{k}={v:.3f}" for k, v in r["first_step_losses"].items()
                                   if k in ("loss", "loss_ce", "loss_mlm", "loss_cos")) for r in t["rows"]) + ".")
    for kind, mem in memory.items():
      if "error" in mem:
        lines.append(f"Memory probe {kind} failed: {mem['error'].splitlines()[-1] if mem['error'] else '?'}")
        continue
      text = (f"Memory ({kind}, own process, VmHWM): {mem['peak_rss'] / 2**30:.2f} GiB peak over 2 steps, "
              f"{mem['rss_before_steps'] / 2**30:.2f} GiB resident before them, "
              f"{mem['rss_after_import'] / 2**30:.2f} GiB after imports")
      if mem.get("compile_peak_rss"):
        text += f"; {mem['compile_peak_rss'] / 2**30:.2f} GiB peak while compiling"
      if mem.get("xla_memory_analysis"):
        a = mem["xla_memory_analysis"]
        text += (f"; XLA buffer assignment: arguments {a['argument_bytes'] / 2**30:.2f} GiB, temporaries "
                 f"{a['temp_bytes'] / 2**30:.2f} GiB, outputs {a['output_bytes'] / 2**30:.2f} GiB "
                 f"({a['alias_bytes'] / 2**30:.2f} GiB aliased to donated inputs)")
      lines.append(text + ".")
  lines += format_bf16(results)
  acc = results.get("accelerator") or {}
  if acc:
    lines += ["", "### 4. Accelerator (bfloat16)", ""]
  if "skipped" in acc:
    lines.append(f"Skipped: {acc['skipped']}.")
  elif acc:
    lines += [f"Device: {acc['device_kind']} ({acc['backend']}).", "",
              "| what | batch x length | ms | tokens/s | MFU | compile s |", "|---|---|---:|---:|---:|---:|"]
    rows = [dict(r, name=f"{r['arch']} MLM forward") for r in acc["inference"]] + acc["training"]
    for r in rows:
      mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (unknown peak)"
      compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") else "-"
      lines.append(f"| {r['name']} | {r['batch']}x{r['length']} | {ms(r['step_s'])} | {r['tokens_per_s']:,.0f} | "
                   f"{mfu} | {compile_s} |")
    lines += ["", "MFU counts the model FLOPs of distilbert_jax/hardware/flops.py (the step with the vocabulary head at "
              "the masked positions: that head only at those positions) over the device's bfloat16 peak."]
  if results.get("roofline"):
    roof = results["roofline"]
    lines += ["", "### CPU roofline, float32: each framework's matrix products alone, and what the targets need", "",
              "| matrix product | ours ms | PyTorch ms | ours GFLOP/s | PyTorch GFLOP/s |", "|---|---:|---:|---:|---:|"]
    for r in roof["matmuls"]:
      lines.append(f"| {r['shape']} | {r['ours_s'] * 1e3:.1f} | {r['torch_s'] * 1e3:.1f} | {r['ours_gflops']:.0f} | "
                   f"{r['torch_gflops']:.0f} |")
    lines += ["", f"Best matrix-product rate measured (either framework): **{roof['best_matmul_gflops']:.0f} GFLOP/s**.",
              "", "| workload | model GFLOP (flops.py) | ours GFLOP/s | PyTorch GFLOP/s | target | GFLOP/s the target "
              "needs | ... over the best matmul rate |", "|---|---:|---:|---:|---:|---:|---:|"]
    for w in roof["workloads"]:
      lines.append(f"| {w['name']} | {w['gflop']:.1f} | {w['ours_gflops']:.0f} | {w['torch_gflops']:.0f} | "
                   f"{w['target']}x | {w['needed_gflops']:.0f} | **{w['needed_vs_best_matmul']:.0%}** |")
  if results.get("levers"):
    lines += ["", "### Levers (side by side in one process; the first row of each group is our setting)", "",
              "| what | variant | median ms | ours / variant time | compile s |", "|---|---|---:|---:|---:|"]
    for what, variants in results["levers"].items():
      reference = next(iter(variants.values()))["median_s"]
      for name, v in variants.items():
        compile_s = f"{v['compile_s']:.1f}" if "compile_s" in v else "-"
        lines.append(f"| {what} | {name} | {ms(v['median_s'])} | {reference / v['median_s']:.2f} | {compile_s} |")
  if results.get("xla_flag_sweep"):
    names = workload_names()
    lines += ["", "### XLA CPU flags (DistilBERT-base forward, one process per setting, settings alternated)", "",
              "| XLA_FLAGS | " + " | ".join(f"{n} ms (vs none)" for n in names) + " | max load |",
              "|---|" + "---:|" * len(names) + "---:|"]
    for r in results["xla_flag_sweep"]:
      if "error" in r:
        lines.append(f"| `{r['flags']}` | failed: {r['error']} |" + " |" * len(names))
        continue
      cells = [f"{ms(r[n]['median_s'])} ({r[n]['speedup_vs_default']:.2f}x)" for n in names]
      lines.append(f"| `{r['flags']}` | " + " | ".join(cells) + f" | {r['load_average']:.1f} |")
  return "\n".join(lines)



def _rel(row: dict, name: str) -> str:
  value = row["rel_diff"].get(name)
  return "-" if value is None else f"{value:.1e}"


def _ms_or_dash(row: dict, name: str) -> str:
  return ms(row["times_s"][name]) if name in row["times_s"] else "-"


def _ratio(row: dict, key: str, bold: bool = True) -> str:
  if key not in row:
    return "-"
  return f"**{row[key]:.2f}x**" if bold else f"{row[key]:.2f}x"


def format_bf16(results: dict) -> list[str]:
  """Sections 6 and 7 (`--bf16`): the processor, inference and the distillation step in
  bfloat16 against PyTorch, and the bfloat16 targets."""
  if not (results.get("bf16_inference") or results.get("bf16_training") or results.get("bf16_matmuls")):
    return []
  cpu, probe = results["processor"], results["torch_bf16_probe"]
  yes = lambda flag: "yes" if cpu["flags"].get(flag) else "no"
  lines = ["", "### 6. bfloat16 on CPU", "",
           f"Processor: {cpu['name']} (vendor {cpu['vendor']}, family {cpu['family']}, model {cpu['model']}), "
           f"{cpu['cores']} cores; avx512_bf16: **{yes('avx512_bf16')}**, amx_bf16: **{yes('amx_bf16')}** "
           f"(avx512f: {yes('avx512f')}, avx512_vnni: {yes('avx512_vnni')}); models.cpu_has_native_bfloat16(): "
           f"{cpu['native_bfloat16']}, so dtype 'auto' is {cpu['auto_dtype']}."]
  if probe.get("ok"):
    lines.append(f"PyTorch bfloat16: runs here (a child process ran a bfloat16 matmul, bfloat16 weights and "
                 f"attention, and an autocast forward and backward; CPU capability {probe['cpu_capability']}, "
                 f"oneDNN bfloat16 {'supported' if probe['mkldnn_bf16'] else 'not supported'}).")
  else:
    lines.append(f"**PyTorch bfloat16 does not run here: {probe.get('reason')}. Ours is held against PyTorch "
                 "float32 only; the PyTorch bfloat16 columns are empty.**")
  lines += ["", "Ours bf16 = bfloat16 parameters and compute (products accumulated in float32); PyTorch bf16 = "
            "`model.to(torch.bfloat16)`. Ratios are speed-ups (PyTorch time / our time; > 1: ours is faster). "
            "Relative difference = max|output - our float32 output| / max|our float32 output| (hidden states "
            "for the base head, logits for the MLM head)."]
  rows = results.get("bf16_inference") or []
  short = [r for r in rows if r["dtype"] == "bfloat16"]
  long_rows = [r for r in rows if r["dtype"] == "float32"]
  if short:
    lines += ["", "#### 6a. Inference: speed and accuracy", "",
              "| model | head | batch x length | ours bf16 ms | PyTorch bf16 ms | bf16 vs PyTorch bf16 | "
              "bf16 vs PyTorch f32 | f32 vs PyTorch f32 | rel. diff ours bf16 | rel. diff PyTorch bf16 | load |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in short:
      lines.append(f"| {r['arch']} | {r['head']} | {r['batch']}x{r['length']} | {_ms_or_dash(r, 'ours/bf16_params')} | "
                   f"{_ms_or_dash(r, 'torch/bf16_weights')} | {_ratio(r, 'bf16_vs_torch_bf16')} | "
                   f"{_ratio(r, 'bf16_vs_torch_f32')} | {_ratio(r, 'f32_vs_torch_f32')} | "
                   f"{_rel(r, 'ours/bf16_params')} | {_rel(r, 'torch/bf16_weights')} | {r['load_average']:.1f} |")
    lines += ["", "#### 6b. Every contender: median ms (relative difference from our float32 output)", "",
              "| model | head | batch x length | ours f32 | ours bf16, f32 params | ours bf16, bf16 params | "
              "PyTorch f32 | PyTorch bf16 weights | PyTorch autocast | ours bf16 (f32 params) vs autocast | "
              "ours f32 vs PyTorch f32, max abs diff |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in short:
      cell = lambda n: "-" if n not in r["times_s"] else (
          ms(r["times_s"][n]) + ("" if n == "ours/f32" else f" ({_rel(r, n)})"))
      lines.append(f"| {r['arch']} | {r['head']} | {r['batch']}x{r['length']} | " + " | ".join(
          cell(n) for n in ("ours/f32", "ours/bf16", "ours/bf16_params", "torch/f32", "torch/bf16_weights",
                            "torch/autocast")) + f" | {_ratio(r, 'bf16_vs_torch_autocast', False)} | "
                   f"{r['rel_diff']['torch/f32_max_abs_diff']:.1e} |")
  if long_rows:
    lines += ["", "#### 6c. Inference, float32, long sequences: our blocked attention", "",
              "| model | head | batch x length | ours (blocked attention) ms | PyTorch ms | f32 vs PyTorch f32 | "
              "ours f32 vs PyTorch f32, max abs diff | load |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in long_rows:
      lines.append(f"| {r['arch']} | {r['head']} | {r['batch']}x{r['length']} | {ms(r['times_s']['ours/f32_blocked'])} "
                   f"| {ms(r['times_s']['torch/f32'])} | {_ratio(r, 'f32_vs_torch_f32')} | "
                   f"{r['rel_diff']['torch/f32_max_abs_diff']:.1e} | {r['load_average']:.1f} |")
  pairs = results.get("bf16_student_teacher") or []
  if pairs:
    lines += ["", "#### 6d. Student vs teacher (ours): DistilBERT-base vs BERT-base throughput", "",
              "| head | batch x length | ours f32 | ours bf16 | (PyTorch f32) | param ratio |",
              "|---|---|---:|---:|---:|---:|"]
    for p in pairs:
      lines.append(f"| {p['head']} | {p['batch']}x{p['length']} | **{p['f32']:.2f}x** | **{p['bf16']:.2f}x** | "
                   f"{p['torch_f32']:.2f}x | {p['param_ratio']:.2f} |")
  products = results.get("bf16_matmuls") or []
  if products:
    lines += ["", "#### 6e. Matrix products alone (1,024 tokens), float32 and bfloat16 (float32 accumulation)", "",
              "| matrix product | dtype | ours ms | PyTorch ms | ours GFLOP/s | PyTorch GFLOP/s | ours / PyTorch speed |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in products:
      theirs = (f"{r['torch_s'] * 1e3:.1f} | {r['ours_gflops']:.0f} | {r['torch_gflops']:.0f} | "
                f"{r['torch_s'] / r['ours_s']:.2f}x") if "torch_s" in r else f"- | {r['ours_gflops']:.0f} | - | -"
      lines.append(f"| {r['shape']} | {r['dtype']} | {r['ours_s'] * 1e3:.1f} | {theirs} |")
  t = results.get("bf16_training")
  if t:
    lines += ["", f"### 7. Distillation step, bfloat16 and float32, batch {t['batch']} x {t['length']} (BERT-base "
              "teacher, DistilBERT-base student)", "",
              "ours/bf16: teacher in bfloat16 with bfloat16 parameters, student computing in bfloat16 on float32 "
              "master weights (`teacher.dtype` and `student.dtype` = \"bfloat16\"). ours/bf16_teacher: only the teacher "
              "in bfloat16 (`teacher.dtype` = \"bfloat16\", the student in float32). torch/autocast: the float32 "
              "PyTorch step with its forwards and losses under `torch.autocast(\"cpu\", dtype=torch.bfloat16)`.",
              "", "| step | ms | tokens/s | vs PyTorch, same precision | vs PyTorch f32 | first-step loss rel. diff "
              "from f32 | compile s | load |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in t["rows"]:
      same = f"**{r['vs_torch']:.2f}x** vs {r['torch_baseline']}" if "vs_torch" in r else "-"
      vs_f32 = f"**{r['vs_torch_f32']:.2f}x**" if "vs_torch_f32" in r else "-"
      loss = f"{r['loss_rel_diff']:.1e}" if "loss_rel_diff" in r else "-"
      compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") else "-"
      lines.append(f"| {r['name']} | {ms(r['step_s'])} | {r['tokens_per_s']:,.0f} | {same} | {vs_f32} | {loss} | "
                   f"{compile_s} | {r['load_average']:.1f} |")
    lines += ["", "Same weights (float32): " + ", ".join(f"{k} {v:.1e}" for k, v in t["checks"].items()) + ".",
              "First-step losses (ours share one masking draw, PyTorch's two another): " + "; ".join(
                  f"{r['name']} " + " ".join(f"{k}={v:.4f}" for k, v in r["first_step_losses"].items())
                  for r in t["rows"]) + "."]
  targets = results.get("bf16_targets") or []
  if targets:
    lines += ["", "#### bfloat16 targets (CPU with bfloat16 dot products)", "", "| target | measured | met? |",
              "|---|---|---|"]
    for g in targets:
      met = "not measured" if g["met"] is None else (
          f"**{'yes' if g['met'] else 'no'}** (lowest {g['worst']:.2f}x)")
      lines.append(f"| {g['target']} | {g['measured']} | {met} |")
  return lines
