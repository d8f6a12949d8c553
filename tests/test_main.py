"""The `distilbert-jax` command line: help, config overrides and the one-line error contract
(message on stderr, exit status 2, no traceback, nothing written)."""
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from conftest import ROOT
from distilbert_jax import configuration, errors

TINY = str(ROOT / "configs" / "tiny.py")


def cli(*args, cwd=None, timeout=300):
  return subprocess.run([sys.executable, "-m", "distilbert_jax.main", *args], capture_output=True, text=True,
                        cwd=cwd, timeout=timeout)


def assert_one_line_error(result, *fragments):
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  errors_ = [line for line in lines if line.startswith("distilbert-jax: error:")]
  assert len(errors_) == 1, result.stderr
  for fragment in fragments:
    assert fragment in errors_[0], (fragment, errors_[0])


def test_help_lists_every_subcommand_with_one_line_each():
  result = cli("--help")
  assert result.returncode == 0
  for command in ("distill", "finetune", "evaluate", "convert", "token-counts", "evaluate-sts"):
    assert command in result.stdout
  assert "--xla" not in result.stdout and "absl" not in result.stdout


@pytest.mark.parametrize("command, flags", [
    ("distill", ["--config", "--workdir", "--config.SECTION.FIELD"]),
    ("finetune", ["--config", "--workdir", "--config.SECTION.FIELD"]),
    ("evaluate", ["--model", "--task", "--data", "--split", "--out"]),
    ("convert", ["--to", "--head", "--overwrite"]),
    ("token-counts", ["--config", "--out"]),
    ("evaluate-sts", ["--model", "--data", "--teacher"]),
])
def test_subcommand_help_lists_its_own_flags_only(command, flags):
  result = cli(command, "--help")
  assert result.returncode == 0, result.stderr
  for flag in flags:
    assert flag in result.stdout, flag
  assert len(result.stdout.splitlines()) < 40  # none of absl's or jax's hundreds of flags


@pytest.mark.parametrize("override, fragments", [
    ("--config.optim.learnin_rate=1", ["unknown field 'learnin_rate' in config.optim",
                                       "did you mean --config.optim.learning_rate?"]),
    ("--config.trian.num_steps=1", ["unknown field 'trian'", "did you mean --config.train.num_steps?"]),
    ("--config.train.batch_size=abc", ["--config.train.batch_size=abc: expected an integer"]),
    ("--config.train.progress_bar=maybe", ["expected true or false"]),
    ("--config.data.sources=notatuple", ["expected a tuple"]),
])
def test_bad_config_overrides_are_one_line_and_exit_2(tmp_path, override, fragments):
  result = cli("distill", "--config", TINY, "--workdir", str(tmp_path / "w"), override)
  assert_one_line_error(result, *fragments)
  assert not (tmp_path / "w").exists()


def test_missing_config_file_and_unusable_workdir_are_one_line_and_exit_2(tmp_path):
  assert_one_line_error(cli("distill", "--config", "no/such/config.py", "--workdir", str(tmp_path)),
                        "no/such/config.py: no such config file")
  a_file = tmp_path / "file"
  a_file.write_text("")
  assert_one_line_error(cli("distill", "--config", TINY, "--workdir", str(a_file)), "is not a directory")


def test_config_problems_found_before_training_are_one_line_and_exit_2(tmp_path):
  result = cli("distill", "--config", TINY, "--workdir", str(tmp_path), "--config.train.grad_accum_steps=3")
  assert_one_line_error(result, "train.batch_size=16 must be a positive multiple of train.grad_accum_steps=3")
  result = cli("distill", "--config", TINY, "--workdir", str(tmp_path), "--config.mesh.data=3")
  assert_one_line_error(result, "does not split over the mesh")


def test_missing_required_flags_and_unknown_commands_exit_2():
  assert cli("distill").returncode == 2
  assert cli("frobnicate").returncode == 2
  assert cli("convert", "--to", "flax", "a", "b", "--config.x=1").returncode == 2


def test_convert_of_a_missing_directory_is_one_line_and_writes_nothing(tmp_path):
  missing = tmp_path / "no_such_model"
  assert_one_line_error(cli("convert", "--to", "flax", str(missing), str(tmp_path / "out")), str(missing))
  assert not (tmp_path / "out").exists()


def test_token_counts_resolves_the_embedded_corpus_as_distill_does(tmp_path, minilm):
  out = tmp_path / "counts.npy"
  result = cli("token-counts", "--config", TINY, "--workdir", str(tmp_path / "w"), "--out", str(out),
               f"--config.data.tokenizer_dir={minilm}")
  assert result.returncode == 0, result.stderr[-2000:]
  counts = np.load(out)
  assert counts.shape == (30522,) and counts.sum() > 10_000
  assert counts[101] == counts[102] > 0  # one [CLS] and one [SEP] per sequence


def test_overrides_take_the_type_of_the_field_they_replace():
  config = ml_collections.ConfigDict(dict(a=dict(n=1, x=0.5, flag=False, name="s", seq=(1,), d={"k": 1})))
  configuration.apply_overrides(config, [("a.n", "1_000"), ("a.x", "2"), ("a.flag", "True"), ("a.name", "12"),
                                         ("a.seq", "('t', 'u')"), ("a.d", "{'dropout': 0.0}")])
  assert (config.a.n, config.a.x, config.a.flag, config.a.name) == (1000, 2.0, True, "12")
  assert config.a.seq == ("t", "u") and config.a.d.to_dict() == {"dropout": 0.0}
  with pytest.raises(errors.ConfigError, match="did you mean --config.a.name"):
    configuration.apply_overrides(config, [("a.nme", "x")])


def test_split_overrides_accepts_equals_and_space_forms():
  assert configuration.split_overrides(["--config.a=1", "--config.b", "2", "--workdir", "w"]) == (
      [("a", "1"), ("b", "2")], ["--workdir", "w"])


def test_resolve_paths_makes_every_path_field_absolute_from_the_current_directory(tmp_path, monkeypatch):
  from configs import distilbert_base, glue
  monkeypatch.chdir(tmp_path)
  (tmp_path / "models").mkdir()  # without it, models/mini would be a Hugging Face Hub repo id
  config = glue.get_config()
  config.model.path, config.teacher.path, config.data.train = "models/mini", "../teacher", "train.csv"
  config.data.eval, config.data.tokenizer_dir = "", "~/tok"
  resolved = configuration.resolve_paths(config)
  assert resolved.model.path == str(tmp_path / "models" / "mini")
  assert resolved.teacher.path == str(tmp_path.parent / "teacher")
  assert resolved.data.train == str(tmp_path / "train.csv") and resolved.data.eval == ""
  assert resolved.data.tokenizer_dir == str(Path.home() / "tok")
  assert config.model.path == "models/mini"  # a copy: the caller's config is left as it was
  config = distilbert_base.get_config()
  config.data.sources = ("embedded", "a.txt", "text:b/*.txt", "tfds:lm1b:train:text")
  config.mask.token_counts, config.eval_heldout = "counts.npy", "embedded"
  resolved = configuration.resolve_paths(config)
  assert resolved.data.sources == ("embedded", str(tmp_path / "a.txt"), f"text:{tmp_path}/b/*.txt",
                                   "tfds:lm1b:train:text")
  assert resolved.mask.token_counts == str(tmp_path / "counts.npy") and resolved.eval_heldout == "embedded"


def test_a_workdir_that_cannot_be_created_is_one_line_and_nothing_is_made(tmp_path, monkeypatch):
  from distilbert_jax import main
  monkeypatch.chdir(tmp_path)
  a_file = tmp_path / "file"
  a_file.write_text("")
  with pytest.raises(errors.ConfigError, match="cannot create the work directory"):
    main._workdir(str(a_file / "run"))
  assert main._workdir("runs/new") == tmp_path / "runs" / "new" and not (tmp_path / "runs").exists()


def test_evaluate_flags_default_to_the_fine_tuning_configs_values():
  from configs import glue as glue_config
  from distilbert_jax import main
  config = glue_config.get_config()
  args = main.build_parser().parse_args(["evaluate", "--model", "M", "--task", "custom", "--data", "D"])
  assert args.batch_size == config.eval.batch_size
  assert tuple(args.text_columns.split(",")) == tuple(config.data.text_columns)
  assert args.label_column == config.data.label_column
