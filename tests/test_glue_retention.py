"""scripts/glue_retention.py: the rows' configs, the recipe a result file records, reuse of a
result file, and the augmentation cache a task's runs share."""
import json
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import glue_retention  # noqa: E402
from configs import glue as glue_config  # noqa: E402
from distilbert_jax.jobs import augmented  # noqa: E402


def configured(row_name, task, tmp_path):
  mlm = tmp_path / "mlm"
  mlm.mkdir(exist_ok=True)
  (mlm / "mlm_head.json").write_text(json.dumps({"layers": 3, "training_sentences": 40000, "heldout_top1": 0.193635}))
  args = SimpleNamespace(distilled="", distilled_glue="", teacher_dir="TEACHER", mlm=str(mlm))
  config = glue_config.get_config()
  config.task = task
  row = glue_retention.ROWS[row_name]
  glue_retention.configure(config, args, row, "TEACHER_EXPORT",
                           pair_task=glue_retention.glue.get_task(task).is_pair)
  return config, row


def test_an_augmented_row_adds_new_pairs_only_to_pair_tasks_and_records_its_mlm(tmp_path):
  config, row = configured("L3ft+KD+aug", "stsb", tmp_path)
  assert config.model.path == config.teacher.path == "TEACHER_EXPORT"
  assert (config.augment.num_variants, config.augment.num_pairs, config.augment.words_per_row) == (20, 4000, 4)
  assert config.augment.mlm_path == str(tmp_path / "mlm")
  recipe = glue_retention.recipe_of(config, row)
  assert recipe["augment"]["num_pairs"] == 4000
  assert recipe["mlm"] == {"head": "scripts/train_mlm_head.py", "layers": 3, "training_sentences": 40000,
                           "heldout_top1": 0.1936}
  config, row = configured("L3+KD+aug", "cola", tmp_path)
  assert config.model.path == "TEACHER" and config.model.layers == (0, 3, 5)
  assert (config.augment.num_variants, config.augment.num_pairs) == (20, 0)
  assert glue_retention.recipe_of(config, row)["augment"]["num_pairs"] == 0
  config, row = configured("L3+KD", "cola", tmp_path)
  assert config.augment.num_variants == 0 and "augment" not in glue_retention.recipe_of(config, row)


def test_the_layers_and_augmentation_row_runs_the_teacher_in_the_step(tmp_path):
  config, row = configured("L3ft+KD+layers+aug", "cola", tmp_path)
  assert config.model.path == config.teacher.path == "TEACHER_EXPORT"
  assert (config.loss.alpha_hidden, config.loss.alpha_attention, config.loss.alpha_kd) == (1.0, 1.0, 0.5)
  assert (config.augment.num_variants, config.augment.num_pairs) == (20, 0) and row.epochs == 1.0
  assert augmented.teacher_in_step(config)
  assert not augmented.teacher_in_step(configured("L3ft+KD+aug", "cola", tmp_path)[0])


def test_a_result_file_is_reused_only_with_its_recipe_and_runs_share_the_augment_cache(tmp_path, monkeypatch):
  made = []

  def train_and_evaluate(config, workdir):  # what the job leaves in its workdir
    augment = tmp_path / "runs" / workdir.split("/runs/")[1] / "augment"
    seen = sorted(p.name for p in augment.glob("*")) if augment.exists() else []
    augment.mkdir(parents=True, exist_ok=True)
    (augment / f"teacher-{len(made)}.npy").write_text("outputs")
    made.append(seen)
    return {"final_eval_accuracy": 0.5, "num_steps": 10, "loss": 0.1}

  monkeypatch.setattr(glue_retention.jobs, "train_and_evaluate", train_and_evaluate)
  cache = tmp_path / "runs" / "cola" / "augment_cache"
  recipe = {"learning_rate": 2e-4}
  for i in range(2):
    result = glue_retention.run_one(None, tmp_path / "runs" / "cola" / f"row{i}", tmp_path / f"seed{i}.json",
                                    "cola", recipe, {"train": 4}, keep_export=False, augment_cache=cache)
    assert result["metrics"] == {"accuracy": 0.5}
  assert made == [[], ["teacher-0.npy"]]  # the second run found the first one's outputs
  assert sorted(p.name for p in cache.glob("*")) == ["teacher-0.npy", "teacher-1.npy"]
  reused = glue_retention.run_one(None, tmp_path / "runs" / "x", tmp_path / "seed0.json", "cola", recipe, {},
                                  keep_export=False)
  assert reused["metrics"] == {"accuracy": 0.5} and len(made) == 2  # read back, not run again
  with pytest.raises(SystemExit, match="seed0.json: measured with another recipe"):
    glue_retention.run_one(None, tmp_path / "runs" / "x", tmp_path / "seed0.json", "cola",
                           {"learning_rate": 1e-4}, {}, keep_export=False)


@pytest.mark.parametrize("task", ["stsb", "cola"])
def test_the_student_config_is_the_recipe_the_table_measured(task, tmp_path):
  from distilbert_jax import configuration
  from distilbert_jax.jobs import augmented
  student = configuration.load(str(ROOT / "configs" / f"glue_student.py:{task}"))
  measured, row = configured("L3ft+KD+aug", task, tmp_path)
  glue_retention._common(measured, glue_retention.RECIPE["student_lr"], 0, row.epochs,
                         glue_retention.RECIPE["batch_size"])
  for field in ("loss", "augment"):
    assert {k: v for k, v in student[field].items() if k != "mlm_path"} == \
        {k: v for k, v in measured[field].items() if k != "mlm_path"}, field
  assert student.model.layers == measured.model.layers
  assert (student.optim.learning_rate, student.optim.warmup_fraction) == (2e-4, measured.optim.warmup_fraction)
  assert (student.train.num_epochs, student.train.batch_size) == (measured.train.num_epochs, 32)
  assert student.task == task
  student.teacher.path = "TEACHER"
  augmented.check_augment(student, data=False)  # valid for the task, single text or pair
