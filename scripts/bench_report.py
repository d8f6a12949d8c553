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
  loads = [r["load_average"] for r in results.get("inference", []) + (results.get("training") or {}).get("rows", [])]
  loads += [env["load_average_start"][0], env["load_average_end"][0]]
  if max(loads) > 1.5 + 0.25 * env["cores"]:  # our own run accounts for about one
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
    lines += ["", "MFU counts the model FLOPs of distilbert_jax/flops.py (the step with the vocabulary head at "
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

