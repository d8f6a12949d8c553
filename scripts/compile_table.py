"""The compile table of BENCHMARKS.md: the paper's recipe and GLUE fine-tuning of BERT-base,
compiled ahead of time for Cloud TPU slices and 8 x H100 on data-only, FSDP and tensor meshes.

  python scripts/compile_table.py --out results/compile            # resumable: one JSON a row
  python scripts/compile_table.py --out results/compile --table    # print the table only

Each row runs `aot.compile_step` (what `distilbert-jax compile` runs) on:
  distill  configs/distilbert_base.py: a BERT-base teacher (bert-base-uncased's config.json:
           no weights are needed), the DistilBERT student, 4,096 x 512 tokens in 8 micro-batches,
           dtypes "auto" (bfloat16 on accelerators)
  glue     configs/glue.py on RTE with BERT-base, 128 tokens (the `finetune` rows); the batch is
           raised from 32 to one sequence per device where the slice has more devices than 32
GPU rows need the CUDA plugin (`pip install 'distilbert_jax[cuda]'`); without it they are
skipped and say so.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # configs/ is not a package that the install puts on sys.path

TARGETS = ("v5e-256", "v4-32", "v5p-128", "v6e-64", "h100x8")
MESHES = {"data": dict(data=-1, fsdp=1, tensor=1), "fsdp": dict(data=1, fsdp=-1, tensor=1),
          "tensor": dict(data=-1, fsdp=1, tensor=4),
          # The tensor mesh with the vocabulary padded to a multiple of 128 (30,522 -> 30,720), as
          # MaxText pads it: 30,522 divides by 2 only, so the tensor axis cannot shard it.
          "tensor_vocab128": dict(data=-1, fsdp=1, tensor=4)}
# Priority order: every target once on the data-only mesh first, so that a partial run is a table.
ROWS = ([("distill", t, "data") for t in TARGETS] + [("distill", t, "fsdp") for t in TARGETS]
        + [("distill", t, "tensor") for t in TARGETS] + [("distill", "v5e-256", "tensor_vocab128")]
        + [("glue", t, mesh) for mesh in ("data", "fsdp", "tensor") for t in TARGETS])


def bert_base_dir(parent: Path, vocab_size: int = 30522) -> str:
  """A directory holding only bert-base-uncased's config.json (our BertConfig defaults are its),
  with another vocabulary size if asked."""
  from distilbert_jax import models
  directory = parent / f"bert-base-uncased-{vocab_size}"
  directory.mkdir(exist_ok=True)
  fields = {k: v for k, v in models.BertConfig().to_hf_dict().items() if k not in ("id2label", "label2id")}
  (directory / "config.json").write_text(json.dumps(dict(fields, vocab_size=vocab_size), indent=2))
  return str(directory)


def make_config(job: str, target, mesh: str, bert_dir: str):
  from configs import distilbert_base, glue
  if job == "distill":
    config = distilbert_base.get_config()
    config.teacher.path = bert_dir
  else:
    config = glue.get_config()
    config.model.path = bert_dir
    config.model.dtype = "auto"
    config.train.batch_size = max(config.train.batch_size, target.num_devices)
  for axis, size in MESHES[mesh].items():
    config.mesh[axis] = size
  return config


def run_row(job: str, target_name: str, mesh: str, parent: Path) -> dict:
  from distilbert_jax import errors
  from distilbert_jax.hardware import aot, targets
  target = targets.parse_target(target_name)
  bert_dir = bert_base_dir(parent, 30720 if mesh.endswith("vocab128") else 30522)
  row = dict(job="distill" if job == "distill" else "finetune", target=target_name, mesh_kind=mesh)
  try:
    row.update(aot.compile_step(make_config(job, target, mesh, bert_dir), target))
  except aot.DoesNotFit as e:
    row.update(e.report or {}, fits=False, error=str(e))
  except errors.Error as e:
    row.update(error=str(e), skipped=True)
  return row


def gib(x) -> str:
  return f"{x / 2 ** 30:.2f}"


def table(rows: list) -> str:
  lines = ["| job | target | mesh | per-device batch (micro) | memory / device GiB | fits | collectives | "
           "roofline step ms (bound) | tokens/s bound | MFU bound | paper's 3 epochs h | compile s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if r.get("skipped") or "per_device_bytes" not in r:
      lines.append(f"| {r['job']} | {r['target']} | {r['mesh_kind']} | - | - | - | - | - | - | - | - | "
                   f"{r.get('error', '')} |")
      continue
    mesh = "x".join(str(v) for v in r["mesh"].values())
    collectives = ", ".join(f"{k} {v}" for k, v in r["collectives"].items())
    hours = f"{r['paper_hours_lower_bound']:,.1f}" if r["job"] == "distill" else "-"
    lines.append(
        f"| {r['job']} | {r['target']} | {r['mesh_kind']} {mesh} | {r['per_device_batch']} "
        f"({r['per_device_micro_batch']}) | {gib(r['per_device_bytes']['total'])} | {'yes' if r['fits'] else 'no'} | "
        f"{collectives} | {r['step_time_lower_bound_s'] * 1e3:,.1f} ({r['bound_by']}) | "
        f"{r['tokens_per_second_upper_bound']:,.0f} | {r['mfu_upper_bound']:.0%} | {hours} | "
        f"{r['compile_seconds']:.0f} |")
  return "\n".join(lines)


def best_meshes(rows: list) -> str:
  """Per job and target, the mesh with the shortest roofline step among those that fit."""
  lines = ["| job | target | best mesh | memory / device GiB | roofline step ms | tokens/s bound | "
           "paper's 3 epochs h |", "|---|---|---|---|---|---|---|"]
  for job in ("distill", "finetune"):
    for target in TARGETS:
      fitting = [r for r in rows if r["job"] == job and r["target"] == target and r.get("fits")]
      if not fitting:
        continue
      r = min(fitting, key=lambda r: r["step_time_lower_bound_s"])
      hours = f"{r['paper_hours_lower_bound']:,.1f}" if job == "distill" else "-"
      lines.append(f"| {job} | {target} | {r['mesh_kind']} {'x'.join(str(v) for v in r['mesh'].values())} | "
                   f"{gib(r['per_device_bytes']['total'])} | {r['step_time_lower_bound_s'] * 1e3:,.1f} | "
                   f"{r['tokens_per_second_upper_bound']:,.0f} | {hours} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="Directory of the rows' JSON files (kept between runs).")
  parser.add_argument("--table", action="store_true", help="Only print the table of the rows already there.")
  parser.add_argument("--only", help="Comma-separated JOB:TARGET:MESH rows to run.")
  args = parser.parse_args()
  import os
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compiles only; nothing runs on this machine
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  rows = [tuple(r.split(":")) for r in args.only.split(",")] if args.only else ROWS
  if not args.table:
    with tempfile.TemporaryDirectory() as tmp:
      for job, target, mesh in rows:
        path = out / f"{job}_{target}_{mesh}.json"
        if path.exists():
          continue
        print(f"compiling {job} for {target} ({mesh} mesh) ...", flush=True)
        try:
          row = run_row(job, target, mesh, Path(tmp))
        except Exception:  # a compiler failure is a result of this table too
          row = dict(job="distill" if job == "distill" else "finetune", target=target, mesh_kind=mesh, skipped=True,
                     error=traceback.format_exc().strip().splitlines()[-1][:300])
        tmp_path = path.with_suffix(".json.tmp")
        tmp_path.write_text(json.dumps(row, indent=2) + "\n")
        tmp_path.replace(path)
        print(table([row]).splitlines()[-1], flush=True)
  done = [json.loads((out / f"{j}_{t}_{m}.json").read_text()) for j, t, m in ROWS
          if (out / f"{j}_{t}_{m}.json").exists()]
  print(table(done))
  print()
  print(best_meshes(done))


if __name__ == "__main__":
  main()
