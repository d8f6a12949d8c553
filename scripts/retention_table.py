"""The retention table, assembled from the result files of scripts/glue_retention.py.

  python scripts/retention_table.py [--results results/retention] [--markdown OUT.md]

Each run is one small JSON file, RESULTS/<task>/<row>/seed<k>.json, committed to the
repository, so that a table is assembled from runs made on different days and machines. A cell
is the median over the seeds at hand of the task's GLUE score x100 (MRPC: the mean of F1 and
accuracy; STS-B: of Pearson and Spearman; CoLA: Matthews correlation; the others: accuracy),
with the range of the seeds; the macro score is the mean of the cells, with and without WNLI
(whose dev set is adversarial: every model scores below the majority class there). "of teacher"
divides a row's macro score by the teacher row's. A row is shown only once every task has a
result; `seeds` counts the fewest seeds of any of its cells.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distilbert_jax.tasks import glue  # noqa: E402

DEFAULT_RESULTS = Path(__file__).resolve().parents[1] / "results" / "retention"
# Task order of the paper's Table 1 (the tasks available here).
TASKS = ("cola", "mrpc", "rte", "sst2", "stsb", "wnli")
TASK_TITLES = {"cola": "CoLA", "mrpc": "MRPC", "rte": "RTE", "sst2": "SST-2", "stsb": "STS-B", "wnli": "WNLI",
               "squad": "SQuAD"}
def task_score(task: str, metrics: dict) -> float:
  """GLUE's score of one task, x100 (the task's main metric: MRPC's and STS-B's combined_score is
  the mean of their two metrics)."""
  return 100 * metrics[glue.get_task(task).main_metric]


def read_results(results_dir) -> dict:
  """{task: {row: [result, ...] in seed order}} of every RESULTS/<task>/<row>/seed<k>.json."""
  found: dict = {}
  for path in sorted(Path(results_dir).glob("*/*/seed*.json"), key=lambda p: (p.parts[-3:-1], _seed(p))):
    result = json.loads(path.read_text(encoding="utf-8"))
    found.setdefault(path.parent.parent.name, {}).setdefault(path.parent.name, []).append(result)
  return found


def _seed(path: Path) -> int:
  return int(path.stem[len("seed"):])


def summarise(results: dict, tasks=TASKS, teacher: str = "teacher") -> dict:
  """{row: {"scores": {task: median}, "low", "high" (the seeds' range), "seeds": {task: n},
  "macro", "macro_no_wnli", "of_teacher", "of_teacher_no_wnli", "of_teacher_per_task",
  "wall_s"}} for every row with a result on every task: the teacher rows first, then by name."""
  rows = sorted({r for t in tasks for r in results.get(t, {})}, key=lambda r: (not r.startswith(teacher), r))
  table = {}
  for row in rows:
    if not all(row in results.get(t, {}) for t in tasks):
      continue
    runs = {t: results[t][row] for t in tasks}
    per_seed = {t: [task_score(t, r["metrics"]) for r in runs[t]] for t in tasks}
    scores = {t: statistics.median(s) for t, s in per_seed.items()}
    entry = {"scores": scores, "low": {t: min(s) for t, s in per_seed.items()},
             "high": {t: max(s) for t, s in per_seed.items()}, "seeds": {t: len(s) for t, s in per_seed.items()},
             "macro": statistics.fmean(scores.values()),
             "wall_s": sum(r["wall_s"] for t in tasks for r in runs[t])}
    others = [s for t, s in scores.items() if t != "wnli"]
    if "wnli" in scores and others:
      entry["macro_no_wnli"] = statistics.fmean(others)
    table[row] = entry
  base = table.get(teacher)
  for entry in table.values():
    if base:
      entry["of_teacher"] = 100 * entry["macro"] / base["macro"]
      if "macro_no_wnli" in entry:
        entry["of_teacher_no_wnli"] = 100 * entry["macro_no_wnli"] / base["macro_no_wnli"]
      entry["of_teacher_per_task"] = {t: 100 * s / base["scores"][t] if base["scores"][t] else float("nan")
                                      for t, s in entry["scores"].items()}
  return table


def glue_table(table: dict, tasks=TASKS) -> str:
  """The markdown table: macro scores, each task's median (range), the share of the teacher."""
  no_wnli = any("macro_no_wnli" in e for e in table.values())
  head = ["model", "seeds"] + (["macro w/o WNLI", "of teacher w/o WNLI"] if no_wnli else []) + [
      "macro", "of teacher"] + [TASK_TITLES[t] for t in tasks] + ["wall time"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, e in table.items():
    cells = [name, str(min(e["seeds"].values()))]
    if no_wnli:
      cells += [f"{e['macro_no_wnli']:.1f}" if "macro_no_wnli" in e else "",
                f"{e['of_teacher_no_wnli']:.1f}%" if "of_teacher_no_wnli" in e else ""]
    cells += [f"{e['macro']:.1f}", f"{e['of_teacher']:.1f}%" if "of_teacher" in e else ""]
    cells += [_cell(e, t) for t in tasks]
    cells.append(f"{e['wall_s'] / 60:.0f} min")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _cell(entry: dict, task: str) -> str:
  median, low, high = entry["scores"][task], entry["low"][task], entry["high"][task]
  return f"{median:.1f}" if entry["seeds"][task] == 1 else f"{median:.1f} ({low:.1f}-{high:.1f})"


def squad_table(results: dict) -> str:
  """SQuAD rows: the median exact match and F1 over the seeds at hand."""
  lines = ["| model | seeds | EM | F1 | wall time |", "|---|---|---|---|---|"]
  for row, runs in results.get("squad", {}).items():
    em = statistics.median(r["metrics"]["exact_match"] for r in runs)
    f1 = statistics.median(r["metrics"]["f1"] for r in runs)
    lines.append(f"| {row} | {len(runs)} | {em:.1f} | {f1:.1f} | {sum(r['wall_s'] for r in runs) / 60:.0f} min |")
  return "\n".join(lines)


def machines(results: dict) -> list[str]:
  """The processors (and core counts) the runs were made on."""
  return sorted({f"{r['machine']['cpu']} ({r['machine']['cores']} cores)" for rows in results.values()
                 for runs in rows.values() for r in runs if "machine" in r})


def report(results_dir=DEFAULT_RESULTS, tasks=TASKS) -> str:
  results = read_results(results_dir)
  table = summarise(results, tasks)
  parts = [f"GLUE dev scores x100, median of the seeds (their range); runs on {', '.join(machines(results))}",
           "", glue_table(table, tasks)]
  if "squad" in results:
    parts += ["", "SQuAD v1.1 (dev articles never trained on)", "", squad_table(results)]
  return "\n".join(parts)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--results", default=str(DEFAULT_RESULTS), help="RESULTS/<task>/<row>/seed<k>.json")
  p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated GLUE tasks of the table")
  p.add_argument("--markdown", default="", help="also write the table to this file")
  args = p.parse_args(argv)
  text = report(args.results, tuple(t for t in args.tasks.split(",") if t))
  print(text)
  if args.markdown:
    Path(args.markdown).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
  main()
