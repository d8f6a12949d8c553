"""How much of the teacher's STS quality a distilled student keeps, on pairs it never saw.

  python scripts/sts_retention.py --sts PATH/STS-B/train.tsv --workdir runs/sts_l3 \
      --config configs/minilm_l3.py [--config.train.num_steps=2000 ...]

1. Splits the STS-B pairs deterministically: every 5th pair (by row) is held out.
2. Distils on the sentences (never the scores) of the other pairs, minus any sentence that also
   occurs in a held-out pair, with the given config (default: all-MiniLM-L6-v2 -> 3 layers).
3. Prints Spearman x 100 on the held-out pairs for the teacher, the distilled student, and the
   same student layers copied from the teacher without distillation, with the ratios.
"""
import json
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distilbert_jax import convert, jobs  # noqa: E402
from distilbert_jax.tasks import embeddings

config_flags.DEFINE_config_file("config", "configs/minilm_l3.py", "Distillation config.")
flags.DEFINE_string("sts", None, "GLUE STS-B style train.tsv (sentence1, sentence2, score).", required=True)
flags.DEFINE_string("workdir", None, "Output directory.", required=True)
flags.DEFINE_integer("heldout_every", 5, "Hold out every k-th pair.")
FLAGS = flags.FLAGS


def split_pairs(path: str, heldout_every: int):
  s1, s2, scores = embeddings.read_sts_tsv(path)
  held = [i for i in range(len(scores)) if i % heldout_every == 0]
  heldout_sentences = {s for i in held for s in (s1[i], s2[i])}
  distill = []
  for i in range(len(scores)):
    if i % heldout_every:
      distill += [s for s in (s1[i], s2[i]) if s not in heldout_sentences]
  distill = list(dict.fromkeys(distill))  # unique, in order
  return distill, ([s1[i] for i in held], [s2[i] for i in held], scores[held])


def main(_):
  workdir = Path(FLAGS.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  distill, (h1, h2, h_scores) = split_pairs(FLAGS.sts, FLAGS.heldout_every)
  corpus_file = workdir / "distill_sentences.txt"
  corpus_file.write_text("\n".join(distill) + "\n", encoding="utf-8")
  print(f"{len(distill)} distillation sentences; {len(h_scores)} held-out pairs")

  config = FLAGS.config
  with config.unlocked():
    config.data.sources = (f"text:{corpus_file}",)
    config.eval_heldout = ""
  result = jobs.train_and_evaluate(config, str(workdir / "run"))

  # The same layers copied from the teacher, not distilled: what distillation adds.
  teacher_model, teacher_params = convert.load_pretrained(config.teacher.path, head="base")
  copied_config, copied_params = convert.student_from_teacher(
      teacher_model.config, teacher_params, teacher_head="base", layers=tuple(config.student.layers),
      student_type=config.student.type, student_head="base")
  copied_dir = workdir / "copied_layers"
  from distilbert_jax import models
  convert.save_pretrained(models.get_model(copied_config, "base"), copied_params, copied_dir,
                          tokenizer_dir=config.teacher.path, overwrite=True)

  scores = {name: embeddings.sts_spearman(embeddings.Encoder(path), h1, h2, h_scores)
            for name, path in (("teacher", config.teacher.path), ("student", result["export_dir"]),
                               ("copied_layers", str(copied_dir)))}
  summary = {**scores, "student_retention": scores["student"] / scores["teacher"],
             "copied_retention": scores["copied_layers"] / scores["teacher"], "heldout_pairs": len(h_scores),
             "distill_sentences": len(distill), "steps": result["num_steps"], "layers": list(config.student.layers),
             "final_loss": result.get("loss")}
  (workdir / "sts_retention.json").write_text(json.dumps(summary, indent=2) + "\n")
  print(f"\nSpearman x 100 on {len(h_scores)} held-out STS-B pairs")
  print("| model | Spearman x 100 | of teacher |\n|---|---|---|")
  for name in ("teacher", "student", "copied_layers"):
    print(f"| {name} | {scores[name]:.2f} | {100 * scores[name] / scores['teacher']:.1f}% |")


if __name__ == "__main__":
  app.run(main)
