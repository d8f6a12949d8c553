"""Throughput of TinyBERT's data augmentation (tasks/augmentation.py) on a GLUE task's training
sentences: the batched, jitted MLM pass over every replaceable word, then the N variants.

  python scripts/bench_augmentation.py --glue GLUE_DIR --mlm MLM_DIR [--task cola] \
      [--max-examples 4000] [--num-variants 20] [--out result.json]

MLM_DIR: a model with a masked-LM head (scripts/train_mlm_head.py writes one for
all-MiniLM-L6-v2). Prints the words sent to the MLM (--words-per-row to a row), their rate, the variants written and the
seconds of each part; the first batch of each bucket length includes its compilation.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_common  # noqa: E402
from distilbert_jax import atomic, convert  # noqa: E402
from distilbert_jax.tasks import augmentation, glue  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--glue", required=True)
  parser.add_argument("--mlm", required=True)
  parser.add_argument("--task", default="cola")
  parser.add_argument("--max-examples", type=int, default=4000)
  parser.add_argument("--num-variants", type=int, default=20)
  parser.add_argument("--top-k", type=int, default=15)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--words-per-row", type=int, default=1)
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  import transformers
  examples = glue.read_glue(args.glue, args.task, "train")
  examples = glue.Examples(examples.ids[:args.max_examples], examples.text_a[:args.max_examples],
                           examples.text_b[:args.max_examples] if examples.text_b else None, None, None, args.task)
  tokenizer = transformers.AutoTokenizer.from_pretrained(args.mlm)
  model, params = convert.load_pretrained(args.mlm, head="masked_lm")
  texts = list(dict.fromkeys([*examples.text_a, *(examples.text_b or ())]))
  start = time.perf_counter()
  words = augmentation.word_candidates(texts, tokenizer, model, params, args.top_k, batch_size=args.batch_size,
                                        words_per_row=args.words_per_row)
  mlm_seconds = time.perf_counter() - start
  by_text = dict(zip(texts, words))
  start = time.perf_counter()
  variants = augmentation.augment_examples(
      examples, [by_text[t] for t in examples.text_a],
      [by_text[t] for t in examples.text_b] if examples.text_b else None,
      num_variants=args.num_variants, replace_prob=0.4, seed=0)
  sample_seconds = time.perf_counter() - start
  n_words = sum(len(w) for w in words)
  result = dict(task=args.task, examples=len(examples), texts=len(texts), words=n_words,
                mlm_seconds=round(mlm_seconds, 1), words_per_second=round(n_words / mlm_seconds, 1),
                variants=len(variants), sample_seconds=round(sample_seconds, 1),
                examples_per_second=round(len(examples) / (mlm_seconds + sample_seconds), 1),
                mlm=str(args.mlm), batch_size=args.batch_size, words_per_row=args.words_per_row,
                processor=bench_common.cpu_name(), cpu_threads=bench_common.cpu_threads())
  print(json.dumps(result, indent=2))
  if args.out:
    atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
