"""Speed you can show: our JAX models and distillation step against transformers' PyTorch ones.

  python scripts/benchmark.py                    # the default run, about 10 minutes on 2 cores
  python scripts/benchmark.py --quick            # 8x128 only, a few minutes
  python scripts/benchmark.py --full             # every model, head and shape (about 20 minutes)
  python scripts/benchmark.py --malloc tcmalloc  # both frameworks on tcmalloc (BENCHMARKS.md)
  python scripts/benchmark.py --bf16             # bfloat16 on CPU against PyTorch (about 9 minutes on 2 cores)
  python scripts/benchmark.py --levers           # compile levers, side by side (about 6 minutes)
  python scripts/benchmark.py --xla-flag-sweep   # XLA CPU flags, one process per setting
  python scripts/benchmark.py --out FILE         # where the JSON results go (default BENCH.json)

Every figure is the median of several timed runs after one warm-up run, and the contenders of
one table row run side by side in one process, in alternating order (forward on even
repetitions, reversed on odd ones), so that machine noise hits them alike; the ratio stands next
to them. Both sides hold the SAME weights: a randomly initialised transformers model, copied
into our parameters with `convert.state_dict_to_params` (training: our student copied out with
`convert.params_to_state_dict`). PyTorch runs with as many threads as XLA's CPU client uses.

Sections (one module each, beside this file):
  1. Inference (bench_inference.py): our jitted forward vs transformers (eval,
     torch.inference_mode), float32.
  2. Student vs teacher (bench_inference.py): our DistilBERT-base vs our BERT-base (the paper,
     section 4: 40% fewer parameters, 60% faster).
  3. Training (bench_training.py): the library's distillation step (distill.DistillationLoss
     in a train.Job, train.make_train_step; configs/distilbert_base.py, float32, batch 8 x 128,
     no accumulation) vs a PyTorch step doing the original trainer's work (distiller.py:
     teacher under no_grad, student, KL over real tokens x T^2, CE over masked tokens, cosine
     over real tokens, backward, clip 5, AdamW); the less-work settings loss.ce_masked_only and
     loss.logits_at_masked_only; compile time; peak memory of each in its own process
     (/proc/self/status VmHWM, reset through clear_refs). The run checks that both frameworks
     hold the same weights (logits within 1e-4 on CPU) and that the step with the vocabulary
     head at the masked positions gives the full masked-only step's losses (within 1e-5,
     relative); it exits with status 1 when a check fails, after writing the results.
  4. Accelerator (bench_accelerator.py): bfloat16 tokens/s and MFU (flops.estimate_mfu);
     skipped without a GPU/TPU.
  5. CPU roofline (bench_roofline.py): each framework's float32 matrix products alone
     (GFLOP/s), the model FLOP rate each reaches end to end, and the rate a target would need.
  6. bfloat16 (bench_bf16.py, `--bf16`, which runs sections 6, 7 and 4): inference in float32 and
     bfloat16 (bfloat16 compute with float32 parameters, and bfloat16 parameters) against
     PyTorch in float32, with bfloat16 weights (model.to(torch.bfloat16)) and under
     torch.autocast; DistilBERT-base and BERT-base, base and MLM heads, 8x128 and 32x128, and
     float32 at 8x512 with our blocked attention; each bfloat16 output's relative difference
     from our float32 output. The processor, its bfloat16 instructions, and a child process
     that checks PyTorch's bfloat16 kernels run here at all (else ours is held against PyTorch
     float32 only).
  7. bfloat16 distillation step (bench_bf16.py): the library's step with a bfloat16 teacher
     (bfloat16 parameters) and a bfloat16 student (float32 master weights) against the PyTorch
     step under torch.autocast, both float32 steps beside them; then the bfloat16 targets, and
     each framework's matrix products alone in float32 and bfloat16 (bench_roofline.py).
Levers (bench_levers.py) and the report's formatting (bench_report.py) have modules too.

Measured tables, each with the machine's load while it ran: BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench_common import SHAPES, cpu_jiffies, cpu_threads, environment, reexec_with_tcmalloc


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="8x128 only, no memory probes: a few minutes")
  parser.add_argument("--full", action="store_true", help="MLM heads at every shape too (about 20 minutes)")
  parser.add_argument("--out", default="BENCH.json", help="where the JSON goes ('' for nowhere)")
  parser.add_argument("--reps", type=int, default=3, help="timed runs per figure (after one warm-up)")
  parser.add_argument("--sections", default="inference,training,memory,roofline,accelerator",
                      help="comma-separated subset of inference,training,memory,roofline,accelerator,"
                           "bf16_inference,bf16_training,bf16_matmuls")
  parser.add_argument("--bf16", action="store_true",
                      help="the bfloat16 run: --sections bf16_inference,bf16_training,bf16_matmuls,accelerator "
                           "(9 minutes on 2 quiet cores; with --quick 8x128 only and no 8x512 rows)")
  parser.add_argument("--levers", action="store_true", help="also time the compile levers")
  parser.add_argument("--xla-flag-sweep", action="store_true", help="also time XLA CPU flags (subprocesses)")
  parser.add_argument("--force-accelerator-section", action="store_true",
                      help="run section 4's code on CPU with tiny shapes (to check it runs)")
  parser.add_argument("--xla-flags", default=None,
                      help="XLA_FLAGS for this run (default: the environment's); e.g. "
                           "'--xla_cpu_experimental_ynn_fusion_type=' (see BENCHMARKS.md)")
  parser.add_argument("--malloc", choices=("system", "tcmalloc"), default="system",
                      help="tcmalloc: re-run this script with libtcmalloc_minimal preloaded, for both "
                           "frameworks (see BENCHMARKS.md: fewer page faults, less noise)")
  parser.add_argument("--train-batch", type=int, default=8)
  parser.add_argument("--train-length", type=int, default=128)
  parser.add_argument("--overrides", default="{}", help="JSON {section.field: value} for the distillation config")
  parser.add_argument("--memory-probe", choices=("jax", "torch"), help=argparse.SUPPRESS)
  parser.add_argument("--flag-probe", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--torch-bf16-probe", action="store_true", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def inference_shapes(args) -> dict:
  """{head: shapes} of sections 1 and 2 for --quick, the default run and --full."""
  if args.quick:
    return {"base": [(8, 128)], "masked_lm": [(8, 128)]}
  if args.full:
    return {"base": SHAPES, "masked_lm": SHAPES}
  return {"base": SHAPES, "masked_lm": ((1, 128), (8, 128))}


def main(argv=None):
  args = parse_args(argv)
  if args.malloc == "tcmalloc":
    reexec_with_tcmalloc()
  overrides = json.loads(args.overrides)
  if args.xla_flags is not None:  # before jax creates its CPU client; child processes inherit it
    os.environ["XLA_FLAGS"] = args.xla_flags

  if args.memory_probe:  # a child process of bench_training.measure_memory
    from bench_training import memory_probe
    print("MEMORY " + json.dumps(memory_probe(args.memory_probe, args.train_batch, args.train_length, overrides)))
    return
  if args.flag_probe:  # a child process of bench_levers.xla_flag_sweep
    from bench_levers import flag_probe
    print("FLAGPROBE " + json.dumps(flag_probe(args.reps)))
    return
  if args.torch_bf16_probe:  # a child process of bench_bf16.torch_bf16_probe
    from bench_bf16 import torch_bf16_probe_child
    print("TORCHBF16 " + json.dumps(torch_bf16_probe_child()))
    return

  import torch
  from bench_accelerator import accelerator_section
  from bench_bf16 import (BF16_SHAPES, LONG_SHAPES, bf16_inference_section, bf16_targets, bf16_training_section,
                          processor_info, student_teacher_bf16, torch_bf16_probe)
  from bench_inference import inference_section, student_teacher_rows
  from bench_levers import levers_section, xla_flag_sweep
  from bench_report import format_report
  from bench_roofline import matmul_rates, roofline_section
  from bench_training import measure_memory, training_section

  torch.set_num_threads(cpu_threads())  # XLA's CPU client runs one thread per available core
  start = time.perf_counter()
  bf16_sections = {"bf16_inference", "bf16_training", "bf16_matmuls"}
  sections = bf16_sections | {"accelerator"} if args.bf16 else set(args.sections.split(","))
  results = {"environment": environment(), "reps": args.reps, "argv": sys.argv[1:]}
  print(f"benchmark: {results['environment']['cpu']}, {cpu_threads()} cores, torch threads "
        f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}", flush=True)
  if "inference" in sections:
    rows = []
    for head, shapes in inference_shapes(args).items():
      rows += inference_section(shapes, (head,), args.reps, {})
    results["inference"] = rows
    results["student_teacher"] = student_teacher_rows(rows)
  if "training" in sections:
    # --quick keeps the less-work variants: they carry the check of the gathered vocabulary head.
    results["training"] = training_section(args.train_batch, args.train_length, args.reps, variants=True,
                                           overrides=overrides)
  if "memory" in sections and not args.quick:
    results["memory"] = measure_memory(("jax", "torch"), args.train_batch, args.train_length, overrides)
  if sections & bf16_sections:
    results["processor"] = processor_info()
    results["torch_bf16_probe"] = probe = torch_bf16_probe()
    print(f"  processor: {results['processor']}; PyTorch bfloat16: {probe}", flush=True)
  if "bf16_inference" in sections:
    shapes, long_shapes = (BF16_SHAPES[:1], ()) if args.quick else (BF16_SHAPES, LONG_SHAPES)
    results["bf16_inference"] = bf16_inference_section(shapes, ("base", "masked_lm"), args.reps, probe["ok"],
                                                       long_shapes)
    results["bf16_student_teacher"] = student_teacher_bf16(results["bf16_inference"])
  if "bf16_training" in sections:
    results["bf16_training"] = bf16_training_section(args.train_batch, args.train_length, args.reps, probe["ok"],
                                                     overrides)
  if "bf16_matmuls" in sections:
    results["bf16_matmuls"] = [row for dtype in ("float32", "bfloat16")
                               for row in matmul_rates(args.reps, dtype, torch_too=dtype == "float32" or probe["ok"])]
  if sections & {"bf16_inference", "bf16_training"}:
    results["bf16_targets"] = bf16_targets(results)
  if "accelerator" in sections:
    results["accelerator"] = accelerator_section(args.force_accelerator_section, args.quick)
  if "roofline" in sections and results["environment"]["backend"] == "cpu":
    results["roofline"] = roofline_section(args.reps, results)
  if args.levers:
    results["levers"] = levers_section(args.reps)
  if args.xla_flag_sweep:
    results["xla_flag_sweep"] = xla_flag_sweep(args.reps)
  results["environment"]["load_average_end"] = os.getloadavg()
  results["environment"]["cpu_jiffies_end"] = cpu_jiffies()
  results["wall_s"] = time.perf_counter() - start
  if args.out:  # first, so that the measurements survive a failure in the formatting
    Path(args.out).write_text(json.dumps(results, indent=1))
  print()
  print(format_report(results))
  if args.out:
    print(f"\nwrote {args.out}")
  failures = (results.get("training") or {}).get("check_failures")
  if failures:
    sys.exit("benchmark.py: check failed: " + "; ".join(failures))


if __name__ == "__main__":
  main()
