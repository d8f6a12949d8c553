"""The training texts of the GLUE tasks at hand, one a line: an in-domain corpus for general
distillation (`distill --config.data.sources=CORPUS`) and the masked-LM head's training text
(scripts/train_mlm_head.py).

  python scripts/glue_corpus.py --glue GLUE_DIR --out CORPUS.txt

Each distinct text of each train.tsv under GLUE_DIR (both sides of a pair), in task order. SST-2
and STS-B lose the 10% of train.tsv that finetune's data.holdout_fraction=0.1 holds out (seed 0),
since their dev sets are not at hand and those rows are scored instead; no text of any dev set
or held-out row is written, so the tasks' scores stay on unseen text.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distilbert_jax import atomic  # noqa: E402
from distilbert_jax.tasks import glue  # noqa: E402
from distilbert_jax.tasks.task_data import holdout  # noqa: E402

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
HOLDOUT_TASKS, HOLDOUT_FRACTION, HOLDOUT_SEED = ("sst2", "stsb"), 0.1, 0


def training_sentences(glue_dir: str) -> list[str]:
  """The distinct training texts of the tasks, without held-out rows or any dev text."""
  texts, dev_texts = [], set()
  for name in TASKS:
    task = glue.get_task(name)
    if not (Path(glue_dir) / task.dir_name / "train.tsv").is_file():
      continue
    examples = glue.read_glue(glue_dir, task, "train")
    if name in HOLDOUT_TASKS:
      examples, held = holdout(examples, HOLDOUT_FRACTION, HOLDOUT_SEED)
      dev_texts.update(held.text_a + (held.text_b or []))
    elif (Path(glue_dir) / task.dir_name / "dev.tsv").is_file():
      dev = glue.read_glue(glue_dir, task, "dev")
      dev_texts.update(dev.text_a + (dev.text_b or []))
    texts += examples.text_a + (examples.text_b or [])
  return [t for t in dict.fromkeys(texts) if t not in dev_texts and t.strip()]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--glue", required=True, help="GLUE_DIR in the GLUE download script's layout")
  p.add_argument("--out", required=True, help="the corpus file to write, one text a line")
  args = p.parse_args(argv)
  texts = training_sentences(args.glue)
  if not texts:
    raise SystemExit(f"{args.glue}: no GLUE train.tsv found")
  atomic.write_text(args.out, "".join(" ".join(t.split()) + "\n" for t in texts))
  print(f"{args.out}: {len(texts)} texts")


if __name__ == "__main__":
  main()
