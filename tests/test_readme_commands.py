"""The README's commands as a user types them: `distilbert-jax ...` in a fresh directory that is
not the repository, every path relative to it, and the outputs the README promises checked, not
only the exit status. The model is the real all-MiniLM-L6-v2 for conversion and STS, a random
2-layer BERT with its tokenizer for the training commands."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from test_finetune import NEGATIVE, PARAGRAPHS, POSITIVE

pytestmark = pytest.mark.slow


def distilbert_jax(*args, cwd, timeout=600):
  """`distilbert-jax ARGS` run in `cwd`, on this checkout's code."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
  result = subprocess.run([sys.executable, "-m", "distilbert_jax.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
  return result


def ok(result):
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def relative(path, cwd) -> str:
  return os.path.relpath(path, cwd)


def strict_json(path: Path):
  """The file's JSON, refusing NaN and Infinity, which JSON does not have."""
  def refuse(constant):
    raise ValueError(f"{path}: {constant} is not JSON")
  return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
  """The user's fresh working directory."""
  return tmp_path_factory.mktemp("user")


def test_convert_both_ways_then_evaluate_sts_with_relative_paths(home, minilm):
  import transformers
  from safetensors.numpy import load_file
  cwd = home / "convert"
  cwd.mkdir()
  source = relative(minilm, cwd)
  ok(distilbert_jax("convert", "--to", "flax", source, "flaxout", cwd=cwd))
  flax_config = json.loads((cwd / "flaxout" / "config.json").read_text())
  assert flax_config["distilbert_jax_head"] == "base" and "scan_layers" in flax_config
  assert (cwd / "flaxout" / "params").is_dir() and (cwd / "flaxout" / "tokenizer.json").is_file()

  ok(distilbert_jax("convert", "--to", "pytorch", "flaxout", "hfout", cwd=cwd))
  original, round_trip = load_file(Path(minilm) / "model.safetensors"), load_file(cwd / "hfout" / "model.safetensors")
  for name, value in round_trip.items():
    np.testing.assert_array_equal(value, original[name], err_msg=name)
  _, info = transformers.AutoModel.from_pretrained(cwd / "hfout", output_loading_info=True)
  assert not any(info.values()), info

  again = distilbert_jax("convert", "--to", "pytorch", "flaxout", "hfout", cwd=cwd)
  assert again.returncode == 2 and "Traceback" not in again.stderr
  assert again.stderr.strip() == ("distilbert-jax: error: hfout: output directory exists and is not empty; "
                                  "add --overwrite to replace it")

  pairs = [("A man is playing a guitar.", "A man plays the guitar.", 4.8),
           ("A dog runs in the park.", "A cat sleeps on a sofa.", 0.4),
           ("Children are playing football.", "Kids play soccer outside.", 4.0),
           ("The stock market fell today.", "A woman is slicing onions.", 0.0),
           ("Two people walk on a beach.", "A couple strolls along the shore.", 4.2)]
  (cwd / "sts.tsv").write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs))
  result = ok(distilbert_jax("evaluate-sts", "--model", "hfout", "--data", "sts.tsv", "--teacher", source, cwd=cwd))
  lines = result.stdout.splitlines()
  assert lines[0] == "5 pairs from sts.tsv"
  assert lines[1].startswith("model   hfout: Spearman x 100 = ") and "teacher" in lines[2]
  assert lines[3] == "student / teacher = 100.0%"  # the same weights, converted twice


def test_token_counts_then_distill_then_resume_with_relative_paths(home, corpus_file):
  cwd = home / "distill"
  cwd.mkdir()
  (cwd / "corpus.txt").write_text("\n".join(Path(corpus_file).read_text().splitlines()[:400]) + "\n")
  config = relative(ROOT / "configs" / "tiny.py", cwd)
  data = ["--config.data.sources=('corpus.txt',)", "--config.data.max_length=32", "--config.data.bucket_lengths=(32,)"]
  result = ok(distilbert_jax("token-counts", "--config", config, "--workdir", "runs/tiny", "--out", "counts.npy",
                             *data, cwd=cwd))
  assert result.stdout.strip().endswith("written to counts.npy")
  counts = np.load(cwd / "counts.npy")
  assert counts.shape == (30522,) and counts[101] == counts[102] > 0  # one [CLS] and one [SEP] a sequence

  steps = ["--config.train.checkpoint_every=2", "--config.train.log_every=1", "--config.train.progress_bar=false"]
  command = ["distill", "--config", config, "--workdir", "runs/tiny", "--config.mask.token_counts=counts.npy",
             *data, *steps]
  ok(distilbert_jax(*command, "--config.train.num_steps=2", cwd=cwd))
  workdir = cwd / "runs" / "tiny"
  first = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in first] == [1, 2]
  recorded = json.loads((workdir / "config.json").read_text())
  assert recorded["data"]["sources"] == [str(cwd / "corpus.txt")]  # resolved where it entered
  assert recorded["mask"]["token_counts"] == str(cwd / "counts.npy")

  ok(distilbert_jax(*command, "--config.train.num_steps=4", cwd=cwd))  # continues from step 2
  metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in metrics] == [1, 2, 3, 4] and metrics[:2] == first
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
  import transformers
  _, info = transformers.AutoModelForMaskedLM.from_pretrained(workdir / "export", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert list((workdir / "tensorboard").iterdir())


def write_spam_data(cwd: Path) -> None:
  """train.csv (with one text of 1,500 words, longer than the model) and dev.csv."""
  rows = [(t, "ham") for t in POSITIVE] + [(t, "spam") for t in NEGATIVE]
  long_text = " ".join(["good"] * 1500)
  (cwd / "train.csv").write_text("text,label\n" + "".join(f'"{t}",{l}\n' for t, l in rows * 2)
                                 + f'"{long_text}",ham\n')
  (cwd / "dev.csv").write_text("text,label\n" + "".join(f'"{t}",{l}\n' for t, l in rows[::2]))


FINETUNE = ["--config.task=custom", "--config.data.train=train.csv", "--config.data.eval=dev.csv",
            "--config.data.max_length=64", "--config.data.bucket_lengths=(16, 64)", "--config.optim.learning_rate=1e-2",
            "--config.train.batch_size=8", "--config.train.log_every=2", "--config.train.checkpoint_every=4",
            "--config.train.progress_bar=false"]


def test_finetune_then_resume_then_evaluate_its_export_with_relative_paths(home, tiny_bert):
  """The README's fine-tuning example on the user's own CSV files, run twice (the second time
  resuming with more steps), then `evaluate` on its export. One test: each step needs the last."""
  import transformers
  cwd = home / "spam"
  cwd.mkdir()
  write_spam_data(cwd)
  command = ["finetune", "--config", relative(ROOT / "configs" / "glue.py", cwd),
             f"--config.model.path={relative(tiny_bert, cwd)}", *FINETUNE, "--workdir", "runs/spam"]
  workdir = cwd / "runs" / "spam"
  first = ok(distilbert_jax(*command, "--config.train.num_steps=8", cwd=cwd))
  first_results = strict_json(workdir / "eval_results.json")
  second = ok(distilbert_jax(*command, "--config.train.num_steps=12", cwd=cwd))

  for name in ("metrics.jsonl", "best.json", "config.json"):
    assert (workdir / name).is_file(), name
  assert (workdir / "best" / "params").is_dir()
  results = strict_json(workdir / "eval_results.json")
  assert set(results) == {"f1", "accuracy", "num_examples"} and results["num_examples"] == 10
  # The final evaluation, one line each, as eval_results.json holds it.
  for run, expected in ((first, first_results), (second, results)):
    assert run.stdout.splitlines() == [f"f1: {expected['f1']:.4f}", f"accuracy: {expected['accuracy']:.4f}",
                                       "num_examples: 10"]
  predictions = (workdir / "predictions" / "dev" / "custom.tsv").read_text().splitlines()
  assert predictions[0] == "index\tprediction" and len(predictions) == 11
  model, info = transformers.AutoModelForSequenceClassification.from_pretrained(workdir / "export",
                                                                               output_loading_info=True)
  assert not any(info.values()) and model.config.id2label == {0: "ham", 1: "spam"}
  metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(m["loss"]) for m in metrics) and metrics[-1]["step"] == 12  # the long text truncated
  # The first run initialises the classifier and says so, in PyTorch names; the resumed run takes
  # it from the checkpoint and says nothing.
  assert "newly initialised" in first.stderr and "classifier.weight" in first.stderr
  assert "newly initialised" not in second.stderr

  ok(distilbert_jax("evaluate", "--model", "runs/spam/export", "--task", "custom", "--data", "dev.csv",
                    "--out", "evaluated", cwd=cwd))
  assert strict_json(cwd / "evaluated" / "eval_results.json") == results
  assert ((cwd / "evaluated" / "predictions" / "dev" / "custom.tsv").read_text()
          == (workdir / "predictions" / "dev" / "custom.tsv").read_text())


# ----------------------------------------------------------------------------- each case of bad or unusual input
# The same commands through the console entry point in this process (argv, working directory and
# exit status as a user's shell sees them), which saves a process start per case.

def typed(monkeypatch, capsys, cwd, *args):
  """(exit status, stdout, stderr) of `distilbert-jax ARGS` typed in `cwd`."""
  from distilbert_jax import main
  monkeypatch.chdir(cwd)
  monkeypatch.setattr(sys, "argv", ["distilbert-jax", *args])
  with pytest.raises(SystemExit) as exit_:
    main.run()
  out = capsys.readouterr()
  return exit_.value.code, out.out, out.err


def one_line_error(status, err, *fragments):
  assert status == 2, err
  lines = [line for line in err.splitlines() if line.startswith("distilbert-jax: error: ")]
  assert len(lines) == 1, err
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])
  return lines[0]


@pytest.fixture
def user(tmp_path, tiny_bert, monkeypatch, capsys):
  """(a fresh directory with the spam data, the model's and glue.py's paths relative to it,
  `run(*args)`, which types a command there)."""
  cwd = tmp_path
  write_spam_data(cwd)
  model = relative(tiny_bert, cwd)
  glue_config = relative(ROOT / "configs" / "glue.py", cwd)
  return cwd, model, glue_config, lambda *args: typed(monkeypatch, capsys, cwd, *args)


@pytest.mark.parametrize("bad, fragment", [
    ("text,label\n", "empty file, no examples"),                         # a header and no rows
    ("", "empty file"),
    ("words,label\na good film,ham\n", "no column 'text'"),
    ("text,label\na good film,maybe\n", "label 'maybe' is not one of ham, spam"),  # dev: a label not in train
])
def test_bad_data_is_one_line_naming_the_file_and_writes_nothing(user, bad, fragment):
  cwd, model, config, run = user
  which = "dev.csv" if "maybe" in bad else "train.csv"
  (cwd / which).write_text(bad)
  status, _, err = run("finetune", "--config", config, f"--config.model.path={model}", *FINETUNE,
                       "--config.train.num_steps=2", "--workdir", "runs/bad")
  one_line_error(status, err, which, fragment)
  assert not (cwd / "runs").exists()


def test_lengths_beyond_the_models_positions_are_refused_before_any_model_is_built(user, monkeypatch):
  from distilbert_jax import convert
  cwd, model, config, run = user
  def no_model(*args, **kwargs):
    raise AssertionError("a model was built")
  monkeypatch.setattr(convert, "load_pretrained", no_model)
  status, _, err = run("finetune", "--config", config, f"--config.model.path={model}", *FINETUNE,
                       "--config.data.max_length=1024", "--config.data.bucket_lengths=(128, 1024)",
                       "--workdir", "runs/long")
  one_line_error(status, err, "data.max_length=1024", "max_position_embeddings=64",
                 "--config.data.max_length and every --config.data.bucket_lengths to at most 64")
  status, _, err = run("finetune", "--config", config, f"--config.model.path={model}", *FINETUNE,
                       "--config.data.bucket_lengths=(64, 128)", "--workdir", "runs/long")
  one_line_error(status, err, "data.bucket_lengths=(64, 128)")
  assert not (cwd / "runs").exists()
  status, _, err = run("evaluate", "--model", model, "--task", "custom", "--data", "dev.csv", "--max-length", "1024")
  one_line_error(status, err, "--max-length 1024", "max_position_embeddings=64", "use --max-length 64 or less")


def squad_file(path: Path, version_2: bool) -> None:
  """PARAGRAPHS as a SQuAD file; version_2 adds a question without an answer to each paragraph."""
  paragraphs = []
  for p, (context, qas) in enumerate(PARAGRAPHS):
    questions = [{"id": f"q{p}{q}", "question": question,
                  "answers": [{"text": answer, "answer_start": context.index(answer)}]}
                 for q, (question, answer) in enumerate(qas)]
    if version_2:
      questions.append({"id": f"q{p}x", "question": "Who painted it?", "answers": [], "is_impossible": True})
    paragraphs.append({"context": context, "qas": questions})
  path.write_text(json.dumps({"version": "v2.0" if version_2 else "1.1",
                              "data": [{"title": "T", "paragraphs": paragraphs}]}))


@pytest.mark.parametrize("task", ["", "--config.task=squad_v2"])
def test_a_squad_v2_file_is_scored_as_v2_after_finetuning_and_by_evaluate(user, task):
  cwd, model, _, run = user
  squad_file(cwd / "train-v2.json", version_2=True)
  squad_file(cwd / "dev-v2.json", version_2=True)
  args = ["finetune", "--config", relative(ROOT / "configs" / "squad.py", cwd), f"--config.model.path={model}",
          "--config.data.train=train-v2.json", "--config.data.eval=dev-v2.json", "--config.data.max_length=24",
          "--config.data.bucket_lengths=(24,)", "--config.data.doc_stride=4", "--config.data.max_query_length=8",
          "--config.train.batch_size=8", "--config.train.num_steps=2", "--config.train.progress_bar=false",
          "--workdir", "runs/squad", *filter(None, [task])]
  status, out, err = run(*args)
  assert status == 0, err
  results = strict_json(cwd / "runs" / "squad" / "eval_results.json")
  assert {"exact_match", "f1", "HasAns_f1", "NoAns_f1", "num_examples"} <= set(results)
  assert results["num_examples"] == 7 and f"NoAns_f1: {results['NoAns_f1']:.4f}" in out.splitlines()
  predictions = json.loads((cwd / "runs" / "squad" / "predictions.json").read_text())
  assert sorted(predictions) == ["q00", "q01", "q02", "q0x", "q10", "q11", "q1x"]
  assert (cwd / "runs" / "squad" / "export" / "model.safetensors").is_file()
  status, out, err = run("evaluate", "--model", "runs/squad/export", "--task", "squad", "--data", "dev-v2.json")
  assert status == 0, err
  assert {"HasAns_f1", "NoAns_f1"} <= set(json.loads(out)) and json.loads(out)["num_examples"] == 7


def test_a_regression_export_says_so_and_evaluate_needs_no_regression_flag(user):
  cwd, model, config, run = user
  pairs = [("a good film", "a good film", 5.0), ("a bad film", "a good day", 1.0), ("so good", "so good", 5.0),
           ("truly bad", "good music", 0.5)] * 4
  (cwd / "pairs.csv").write_text("s1,s2,score\n" + "".join(f'"{a}","{b}",{s}\n' for a, b, s in pairs))
  status, out, err = run("finetune", "--config", config, f"--config.model.path={model}", *FINETUNE,
                         "--config.data.train=pairs.csv", "--config.data.eval=pairs.csv",
                         "--config.data.text_columns=('s1', 's2')", "--config.data.label_column=score",
                         "--config.data.regression=true", "--config.train.num_steps=4", "--workdir", "runs/sts")
  assert status == 0, err
  assert [line.split(":")[0] for line in out.splitlines()] == ["pearson", "spearmanr", "combined_score",
                                                               "num_examples"]
  exported = json.loads((cwd / "runs" / "sts" / "export" / "config.json").read_text())
  assert exported["problem_type"] == "regression" and len(exported["id2label"]) == 1
  status, out, err = run("evaluate", "--model", "runs/sts/export", "--task", "custom", "--data", "pairs.csv",
                         "--text-columns", "s1,s2", "--label-column", "score", "--out", "scored")
  assert status == 0, err
  finetuned = strict_json(cwd / "runs" / "sts" / "eval_results.json")
  # Batches padded to other lengths: the same predictions up to float32 rounding.
  assert strict_json(cwd / "scored" / "eval_results.json") == pytest.approx(finetuned, rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, tiny_bert):
  """tiny_bert with a new 2-class head, in Hugging Face format (as a fine-tuning export)."""
  from distilbert_jax import convert
  model, params = convert.load_pretrained(tiny_bert, head="sequence_classification", init_missing_heads=True)
  path = tmp_path_factory.mktemp("classifier") / "export"
  convert.save_pretrained(model, params, path)
  return path


def test_evaluate_on_an_unlabelled_glue_test_split_writes_its_submission(user, tiny_classifier):
  cwd, _, _, run = user
  rte = cwd / "glue" / "RTE"
  rte.mkdir(parents=True)
  rows = [("A man plays.", "Someone plays."), ("A dog runs.", "A cat sleeps."), ("It rains.", "It is wet.")]
  (rte / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n"
                               + "".join(f"{i}\t{a}\t{b}\tentailment\n" for i, (a, b) in enumerate(rows)))
  (rte / "test.tsv").write_text("index\tsentence1\tsentence2\n"
                                + "".join(f"{i}\t{a}\t{b}\n" for i, (a, b) in enumerate(rows)))
  args = ["evaluate", "--model", relative(tiny_classifier, cwd), "--task", "glue/rte", "--data", "glue"]
  status, _, err = run(*args, "--split", "test")
  one_line_error(status, err, "--split test: the test split has no labels to score; add --out DIR")
  status, out, err = run(*args, "--split", "test", "--out", "submission")
  assert status == 0, err
  lines = (cwd / "submission" / "predictions" / "test" / "RTE.tsv").read_text().splitlines()
  assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == ["0", "1", "2"]
  assert {line.split("\t")[1] for line in lines[1:]} <= {"entailment", "not_entailment"}
  assert json.loads(out[out.index("{"):]) == {"num_examples": 3}
  status, _, err = run(*args, "--split", "validation")
  one_line_error(status, err, "--split validation: task rte has the splits dev, test")
