"""Fine-tuning and task distillation end to end on a tiny BERT with the real MiniLM tokenizer:
learning a separable task through the command line, the export against transformers, task
distillation, exact resume, evaluation of every example, SQuAD, and bad input."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, read_metrics
from distilbert_jax import convert, errors, jobs
from distilbert_jax.jobs import finetune, task_loss
from distilbert_jax.tasks import evaluate_command, evaluator, glue, task_data
from configs import glue as glue_config
from configs import squad as squad_config

POSITIVE = ["a good film", "good acting and a good story", "truly good", "the food was good", "good fun",
            "so good", "a good day", "good music", "very good indeed", "good and warm"]
NEGATIVE = ["a bad film", "bad acting and a bad story", "truly bad", "the food was bad", "bad fun",
            "so bad", "a bad day", "bad music", "very bad indeed", "bad and cold"]


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
  """train.tsv (40 rows) and dev.tsv (10 rows, not a multiple of the evaluation batch)."""
  path = tmp_path_factory.mktemp("sentiment")
  rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
  (path / "train.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows * 2))
  dev = rows[::4] + rows[1::4][:5]
  (path / "dev.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in dev))
  (path / "test.tsv").write_text("text\n" + "".join(f"{t}\n" for t, _ in dev[:7]))
  return path


def sentiment_config(model_path, data, **overrides):
  config = glue_config.get_config()
  config.task = "custom"
  config.model.path = model_path
  config.data.train, config.data.eval = str(data / "train.tsv"), str(data / "dev.tsv")
  config.data.max_length = 16
  config.data.bucket_lengths = (8, 16)
  config.optim.learning_rate = 1e-2
  config.train.batch_size = 8
  config.train.num_steps = 30
  config.train.log_every = 5
  config.train.eval_every = 15
  config.train.checkpoint_every = 10
  config.train.progress_bar = False
  config.eval.batch_size = 4
  for key, value in overrides.items():
    section, field = key.split(".") if "." in key else (None, key)
    (getattr(config, section) if section else config)[field] = value
  return config


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_bert, sentiment):
  """The workdir of a finetune run through the command line."""
  workdir = tmp_path_factory.mktemp("finetuned")
  args = [sys.executable, "-m", "distilbert_jax.main", "finetune", "--config", str(ROOT / "configs/glue.py"),
          "--workdir", str(workdir), "--config.task=custom", f"--config.model.path={tiny_bert}",
          f"--config.data.train={sentiment / 'train.tsv'}", f"--config.data.eval={sentiment / 'dev.tsv'}",
          f"--config.data.test={sentiment / 'test.tsv'}",
          "--config.data.max_length=16", "--config.data.bucket_lengths=(8, 16)", "--config.optim.learning_rate=1e-2",
          "--config.train.batch_size=8", "--config.train.num_steps=30", "--config.train.log_every=5",
          "--config.train.eval_every=15", "--config.train.checkpoint_every=10", "--config.eval.batch_size=4",
          "--config.train.progress_bar=false"]
  result = subprocess.run(args, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_finetune_command_learns_a_separable_task_and_writes_its_outputs(finetuned):
  metrics = read_metrics(finetuned)
  evaluated = [m for m in metrics if "eval_accuracy" in m]
  assert [m["step"] for m in evaluated] == [15, 30]
  assert evaluated[-1]["eval_accuracy"] == 1.0 and evaluated[-1]["eval_num_examples"] == 10
  assert metrics[-1]["loss_task"] < 0.5 * metrics[0]["loss_task"]
  results = json.loads((finetuned / "eval_results.json").read_text())
  assert results["accuracy"] == 1.0 and results["num_examples"] == 10
  best = json.loads((finetuned / "best.json").read_text())
  assert best["metric"] == "accuracy" and best["value"] == 1.0
  predictions = (finetuned / "predictions" / "dev" / "custom.tsv").read_text().splitlines()
  assert predictions[0] == "index\tprediction" and len(predictions) == 11
  assert {line.split("\t")[1] for line in predictions[1:]} == {"pos", "neg"}
  test = (finetuned / "predictions" / "test" / "custom.tsv").read_text().splitlines()
  assert test[0] == "index\tprediction" and len(test) == 8
  assert [line.split("\t")[1] for line in test[1:]] == [line.split("\t")[1] for line in predictions[1:8]]


def test_finetuned_export_loads_in_transformers_without_warnings_and_gives_our_logits(finetuned, sentiment):
  import torch
  import transformers
  export = finetuned / "export"
  model, info = transformers.AutoModelForSequenceClassification.from_pretrained(export, output_loading_info=True)
  assert not any(info.values()), info
  assert model.config.id2label == {0: "neg", 1: "pos"}
  tokenizer = transformers.AutoTokenizer.from_pretrained(export)
  texts = POSITIVE[:3] + NEGATIVE[:3]
  batch = tokenizer(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
  with torch.no_grad():
    reference = model.eval()(**batch).logits.numpy()
  ours_model, params = convert.load_pretrained(str(export), head="sequence_classification")
  ours = ours_model.apply({"params": params}, batch["input_ids"].numpy(),
                          attention_mask=batch["attention_mask"].numpy(),
                          token_type_ids=batch["token_type_ids"].numpy()).logits
  np.testing.assert_allclose(np.asarray(ours), reference, atol=1e-5)


def test_evaluate_command_scores_every_example_of_the_export(finetuned, sentiment, tmp_path):
  result = subprocess.run([sys.executable, "-m", "distilbert_jax.main", "evaluate", "--model",
                           str(finetuned / "export"), "--task", "custom", "--data", str(sentiment / "dev.tsv"),
                           "--max-length", "16", "--batch-size", "3", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((tmp_path / "eval_results.json").read_text())
  assert metrics["num_examples"] == 10 and metrics["accuracy"] == 1.0


def test_evaluation_covers_exactly_n_examples_when_n_does_not_divide_by_the_batch(tiny_bert, sentiment):
  import transformers
  config = sentiment_config(tiny_bert, sentiment)
  data = task_data.load_task_data(config, transformers.AutoTokenizer.from_pretrained(tiny_bert), splits=("eval",))
  model, params = finetune.build_student(config, "sequence_classification", ("neg", "pos"), 2, seed=0)
  for batch_size in (3, 4, 10, 16):
    config.eval.batch_size = batch_size
    (logits,) = evaluator.Evaluator(model, data, config).outputs(params, data.evals[0])
    arrays = data.evals[0].arrays
    direct = model.apply({"params": params}, arrays["input_ids"], attention_mask=arrays["attention_mask"],
                         token_type_ids=arrays["token_type_ids"]).logits
    np.testing.assert_allclose(logits, np.asarray(direct), atol=1e-5, err_msg=f"batch {batch_size}")
  metrics, _ = evaluator.Evaluator(model, data, config).evaluate(params)
  assert metrics["num_examples"] == 10
  assert metrics["accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == arrays["labels"]))


def test_task_distillation_lowers_the_kl_to_the_teacher(finetuned, sentiment, tiny_bert, tmp_path):
  config = sentiment_config(tiny_bert, sentiment, **{"train.num_steps": 24, "train.log_every": 4,
                                                     "train.eval_every": 100, "export": False})
  config.model.layers = (0,)  # a 1-layer student of the 2-layer model
  config.teacher.path = str(finetuned / "export")
  config.loss.alpha_task, config.loss.alpha_kd = 0.0, 1.0
  jobs.train_and_evaluate(config, str(tmp_path))
  kl = [m["loss_kd"] for m in read_metrics(tmp_path)]
  # loss_task is logged for monitoring but has weight 0: the loss is the KL alone.
  assert all(m["loss"] == pytest.approx(m["loss_kd"], rel=1e-6) for m in read_metrics(tmp_path))
  assert kl[-1] < 0.5 * kl[0], kl


def test_finetune_resumes_bit_identically_from_a_checkpoint(tiny_bert, sentiment, tmp_path):
  config = sentiment_config(tiny_bert, sentiment, **{"train.num_steps": 20, "train.log_every": 1,
                                                     "train.eval_every": 10, "export": False})
  full = tmp_path / "full"
  jobs.train_and_evaluate(config, str(full))
  resumed = tmp_path / "resumed"
  shutil.copytree(full, resumed)
  shutil.rmtree(resumed / "checkpoints" / "20")
  jobs.train_and_evaluate(config, str(resumed))
  a, b = read_metrics(full), read_metrics(resumed)
  assert [m["step"] for m in b] == list(range(1, 21))
  for x, y in zip(a[10:], b[10:]):
    for key in ("loss", "loss_task", "grad_norm", "eval_accuracy"):
      assert x.get(key) == y.get(key), (x["step"], key)


PARAGRAPHS = [
    ("The Eiffel Tower is in Paris. It was finished in 1889 and is made of iron.",
     [("Where is the Eiffel Tower?", "Paris"), ("When was it finished?", "1889"), ("What is it made of?", "iron")]),
    ("Mount Everest is the highest mountain. It lies in the Himalayas.",
     [("Where does Everest lie?", "the Himalayas"), ("What is the highest mountain?", "Mount Everest")]),
]
SQUAD = {"version": "1.1", "data": [{"title": "T", "paragraphs": [
    {"context": context, "qas": [{"id": f"q{p}{q}", "question": question,
                                  "answers": [{"text": answer, "answer_start": context.index(answer)}]}
                                 for q, (question, answer) in enumerate(qas)]}
    for p, (context, qas) in enumerate(PARAGRAPHS)]}]}


def test_squad_finetune_writes_predictions_for_every_question_and_an_export_transformers_loads(
    tiny_bert, tmp_path):
  import transformers
  data = tmp_path / "squad.json"
  data.write_text(json.dumps(SQUAD))
  config = glue_config.get_config()
  config.task = "squad"
  config.model.path = tiny_bert
  config.data.train = config.data.eval = str(data)
  config.data.max_length, config.data.bucket_lengths = 24, (24,)  # 2 to 3 windows per question
  config.data.doc_stride, config.data.max_query_length = 4, 8
  config.optim.learning_rate = 1e-3
  config.train.batch_size, config.train.num_steps = 8, 4
  config.train.log_every = config.train.checkpoint_every = 2
  config.train.progress_bar = False
  result = jobs.train_and_evaluate(config, str(tmp_path / "run"))
  predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
  assert sorted(predictions) == ["q00", "q01", "q02", "q10", "q11"]
  assert {"final_eval_exact_match", "final_eval_f1"} <= set(result)
  _, info = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "run" / "export",
                                                                      output_loading_info=True)
  assert not any(info.values()), info


def test_a_head_of_another_size_needs_reinit_head(finetuned, sentiment, tmp_path):
  three = tmp_path / "three.tsv"
  three.write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in
                                              [("good", "pos"), ("bad", "neg"), ("meh", "mid")] * 4))
  config = sentiment_config(str(finetuned / "export"), sentiment, **{"train.num_steps": 2, "export": False})
  config.data.train = config.data.eval = str(three)
  with pytest.raises(errors.ConfigError, match="reinit_head"):
    jobs.train_and_evaluate(config, str(tmp_path / "a"))
  config.model.reinit_head = True
  result = jobs.train_and_evaluate(config, str(tmp_path / "b"))
  assert np.isfinite(result["loss"])


def test_a_student_from_a_finetuned_models_layers_keeps_its_task_head(finetuned, sentiment, tiny_bert):
  export = str(finetuned / "export")
  _, teacher_params = convert.load_pretrained(export, head="sequence_classification")
  config = sentiment_config(export, sentiment, **{"model.layers": (1,)})
  student, params = finetune.build_student(config, "sequence_classification", ("neg", "pos"), 2, seed=0)
  assert student.config.num_hidden_layers == 1
  np.testing.assert_array_equal(params["classifier"]["kernel"], teacher_params["classifier"]["kernel"])
  np.testing.assert_array_equal(params["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"],
                                teacher_params["bert"]["encoder"]["layer"]["1"]["output"]["dense"]["kernel"])
  # A pretrained encoder has no task head, and a head of another size does not fit: a new one.
  _, three = finetune.build_student(config, "sequence_classification", ("a", "b", "c"), 3, seed=0)
  assert three["classifier"]["kernel"].shape[-1] == 3
  config.model.path = tiny_bert
  _, fresh = finetune.build_student(config, "sequence_classification", ("neg", "pos"), 2, seed=0)
  assert fresh["classifier"]["kernel"].shape == teacher_params["classifier"]["kernel"].shape
  assert not np.array_equal(fresh["classifier"]["kernel"], teacher_params["classifier"]["kernel"])


@pytest.mark.parametrize("content, fragment", [
    ("", "empty"),
    ("sentence\tlabel\nfine\tpos\n", "text"),  # no text column
])
def test_bad_training_files_are_one_line_errors_naming_the_file(tiny_bert, sentiment, tmp_path, content, fragment):
  bad = tmp_path / "bad.tsv"
  bad.write_text(content)
  config = sentiment_config(tiny_bert, sentiment)
  config.data.train = str(bad)
  with pytest.raises(errors.Error, match=fragment) as error:
    jobs.train_and_evaluate(config, str(tmp_path / "w"))
  assert str(bad) in str(error.value) and "\n" not in str(error.value)
  assert not (tmp_path / "w").exists()  # nothing written before the data is read and checked


def test_an_eval_label_outside_the_training_labels_and_an_unknown_task_are_errors(tiny_bert, sentiment, tmp_path):
  other = tmp_path / "dev.tsv"
  other.write_text("text\tlabel\nfine\tmaybe\n")
  config = sentiment_config(tiny_bert, sentiment)
  config.data.eval = str(other)
  with pytest.raises(glue.TaskDataError, match="maybe"):
    jobs.train_and_evaluate(config, str(tmp_path / "w"))
  config.task = "glue_nonsense"
  with pytest.raises(errors.Error, match="glue_nonsense"):
    jobs.train_and_evaluate(config, str(tmp_path / "w"))


def test_the_python_api_takes_paths_relative_to_the_current_directory(tiny_bert, sentiment, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = sentiment_config(os.path.relpath(tiny_bert), sentiment, **{"train.num_steps": 4, "train.eval_every": 4})
  config.data.train, config.data.eval = os.path.relpath(sentiment / "train.tsv"), os.path.relpath(sentiment / "dev.tsv")
  result = jobs.train_and_evaluate(config, "runs/relative")
  workdir = tmp_path / "runs" / "relative"
  assert result["export_dir"] == str(workdir / "export") and (workdir / "best" / "params").is_dir()
  assert json.loads((workdir / "eval_results.json").read_text())["num_examples"] == 10
  assert json.loads((workdir / "config.json").read_text())["model"]["path"] == tiny_bert
  assert config.model.path == os.path.relpath(tiny_bert)  # the caller's config is left as it was


@pytest.mark.parametrize("field, value", [("data.max_length", 128), ("data.bucket_lengths", (64, 128))])
def test_lengths_past_the_models_positions_are_config_errors(tiny_bert, sentiment, tmp_path, field, value):
  config = sentiment_config(tiny_bert, sentiment, **{field: value})
  with pytest.raises(errors.ConfigError, match=f"{field}=.*longer than max_position_embeddings=64 of {tiny_bert}"):
    finetune.check_config(config)


def test_a_squad_stride_that_leaves_no_room_names_the_flags(tiny_bert, sentiment):
  config = sentiment_config(tiny_bert, sentiment, **{"data.max_length": 64, "data.bucket_lengths": (64,)})
  config.task, config.data.doc_stride, config.data.max_query_length = "squad", 32, 32
  with pytest.raises(errors.ConfigError, match=r"data.doc_stride=32 must be below data.max_length=64 - "
                                               r"data.max_query_length=32 - 3 = 29.*--config.data.doc_stride"):
    finetune.check_config(config)


@pytest.mark.parametrize("config_module, task", [(glue_config, "glue/rte"), (squad_config, "squad")])
def test_evaluate_takes_the_defaults_of_the_fine_tuning_configs(config_module, task):
  """`evaluate` builds its config from tasks/defaults.py, which configs/glue.py and squad.py read:
  a value written into either file instead fails here."""
  config = config_module.get_config()
  name = evaluate_command.task_name(task)
  evaluated = evaluate_command.evaluation_config(name, "data.tsv", "model", max_position_embeddings=512)
  assert evaluated.task == config.task
  spans = ("doc_stride", "max_query_length") if name.startswith("squad") else ()  # windows: SQuAD's only
  for section, fields in (("data", ("max_length", "bucket_lengths", "text_columns", "label_column", *spans)),
                          ("eval", ("batch_size",)),
                          ("squad", ("version_2", "n_best_size", "max_answer_length", "null_score_diff_threshold"))):
    for field in fields:
      assert evaluated[section][field] == config[section][field], f"{section}.{field}"


def test_a_job_is_built_from_its_parts(tiny_bert, sentiment):
  """make_job's parts one by one: the data, the models for its head, the losses on a batch."""
  config = sentiment_config(tiny_bert, sentiment)
  data, iterator, num_steps = finetune.build_data(config)
  assert num_steps == config.train.num_steps and data.label_names == ("neg", "pos")
  kind, num_outputs, label_names = finetune.task_outputs(config, data.task)
  assert (kind, num_outputs, label_names) == ("classification", 2, ("neg", "pos"))
  assert finetune.task_outputs(config) == (kind, num_outputs, label_names)  # from the config alone
  student, params, teacher, teacher_params = finetune.build_models(config, label_names, num_outputs)
  assert teacher is None and teacher_params is None
  abstract = finetune.build_abstract_models(config, label_names, num_outputs, "cpu")
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(abstract[1]) == shapes(params)
  loss = task_loss.build_loss(config, kind, student, teacher)
  batch = next(iterator)
  sums = loss.loss_sums(params, None, batch, jax.random.PRNGKey(0))
  assert set(sums) == {"task"} and np.isfinite(float(sums["task"]))


def test_a_learning_rate_of_zero_is_chosen_by_the_model_width(tmp_path, tiny_bert, sentiment):
  # configs/glue.py's default: 1e-4 below 512 wide (MiniLM size), run_glue's 2e-5 from 512 up.
  from distilbert_jax import models
  wide = tmp_path / "wide"
  wide.mkdir()
  fields = dict(models.BertConfig(num_hidden_layers=1).to_hf_dict(), architectures=["BertModel"])
  (wide / "config.json").write_text(json.dumps(fields))
  assert glue_config.get_config().optim.learning_rate == 0.0
  for path, expected in ((tiny_bert, 1e-4), (wide, 2e-5)):
    config = sentiment_config(str(path), sentiment, **{"optim.learning_rate": 0.0})
    finetune.make_abstract_job(config, "cpu")
    assert config.optim.learning_rate == expected, path
  config = sentiment_config(str(wide), sentiment, **{"optim.learning_rate": 3e-5})
  finetune.make_abstract_job(config, "cpu")
  assert config.optim.learning_rate == 3e-5  # a rate that is set stays
  config.optim.learning_rate = -1e-4
  with pytest.raises(errors.ConfigError, match=r"optim.learning_rate=-0.0001 must be >= 0 \(0: by the model's width\)"):
    finetune.check_config(config, data=False)
