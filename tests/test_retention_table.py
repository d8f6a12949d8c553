"""scripts/retention_table.py: the retention table from per-run result files (median of seeds,
their range, macro scores with and without WNLI, shares of the teacher)."""
import json
import statistics
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import retention_table  # noqa: E402

# (task, row) -> metrics of seeds 0, 1, 2 (fractions, as the evaluator writes them).
RUNS = {
    ("cola", "teacher"): [{"matthews_correlation": v} for v in (0.20, 0.25, 0.10)],
    ("cola", "L3"): [{"matthews_correlation": v} for v in (0.05, 0.15, 0.10)],
    ("mrpc", "teacher"): [{"f1": f, "accuracy": a, "combined_score": (f + a) / 2} for f, a in ((0.9, 0.8), (0.8, 0.7), (0.86, 0.8))],
    ("mrpc", "L3"): [{"f1": 0.8, "accuracy": 0.7, "combined_score": 0.75}] * 3,
    ("wnli", "teacher"): [{"accuracy": v} for v in (0.3, 0.4, 0.5)],
    ("wnli", "L3"): [{"accuracy": v} for v in (0.5, 0.5, 0.6)],
}
TASKS = ("cola", "mrpc", "wnli")


def write_runs(root, runs=RUNS, seeds=(0, 1, 2)):
  for (task, row), metrics in runs.items():
    for seed, m in zip(seeds, metrics):
      path = root / task / row / f"seed{seed}.json"
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps({"metrics": m, "wall_s": 60.0, "machine": {"cpu": "Test CPU", "cores": 2}}))


def test_cells_are_medians_of_the_seeds_with_their_range_and_macros_without_wnli(tmp_path):
  write_runs(tmp_path)
  table = retention_table.summarise(retention_table.read_results(tmp_path), TASKS)
  assert list(table) == ["teacher", "L3"]  # the teacher first
  teacher, student = table["teacher"], table["L3"]
  assert teacher["scores"]["cola"] == pytest.approx(20.0)
  assert (teacher["low"]["cola"], teacher["high"]["cola"]) == pytest.approx((10.0, 25.0))
  assert teacher["scores"]["mrpc"] == pytest.approx(83.0)  # median of 85, 75, 83: the mean of F1 and accuracy
  assert teacher["seeds"] == {"cola": 3, "mrpc": 3, "wnli": 3}
  assert teacher["macro"] == pytest.approx(statistics.fmean([20.0, 83.0, 40.0]))
  assert teacher["macro_no_wnli"] == pytest.approx(51.5)
  assert student["macro_no_wnli"] == pytest.approx((10.0 + 75.0) / 2)
  assert student["of_teacher_no_wnli"] == pytest.approx(100 * 42.5 / 51.5)
  assert student["of_teacher"] == pytest.approx(100 * statistics.fmean([10.0, 75.0, 50.0]) / teacher["macro"])
  assert student["of_teacher_per_task"]["cola"] == pytest.approx(50.0)
  assert teacher["wall_s"] == pytest.approx(9 * 60.0)
  text = retention_table.glue_table(table, TASKS)
  assert "| teacher | 3 | 51.5 | 100.0% | 47.7 | 100.0% | 20.0 (10.0-25.0) | 83.0 (75.0-85.0) | 40.0 (30.0-50.0) |" in text
  assert "Test CPU (2 cores)" in retention_table.report(tmp_path, TASKS)


def test_a_row_missing_a_task_is_left_out_and_a_seed_count_shows_the_fewest(tmp_path):
  runs = dict(RUNS)
  del runs[("wnli", "L3")]
  runs[("mrpc", "L3")] = runs[("mrpc", "L3")][:1]
  write_runs(tmp_path, runs)
  table = retention_table.summarise(retention_table.read_results(tmp_path), TASKS)
  assert list(table) == ["teacher"]
  table = retention_table.summarise(retention_table.read_results(tmp_path), ("cola", "mrpc"))
  assert table["L3"]["seeds"] == {"cola": 3, "mrpc": 1}
  assert "| L3 | 1 |" in retention_table.glue_table(table, ("cola", "mrpc"))
  assert "macro_no_wnli" not in table["L3"]


def test_seeds_are_read_in_numeric_order(tmp_path):
  runs = {("cola", "teacher"): [{"matthews_correlation": v} for v in (0.1, 0.2, 0.3)]}
  write_runs(tmp_path, runs, seeds=(2, 10, 1))
  found = retention_table.read_results(tmp_path)["cola"]["teacher"]
  assert [r["metrics"]["matthews_correlation"] for r in found] == [0.3, 0.1, 0.2]
