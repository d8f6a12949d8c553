"""The training core end to end on tiny models: exact resume (after a checkpoint, kill -9 and
SIGTERM), unreadable checkpoints, restoring onto other meshes, mesh invariance, gradient
accumulation, teacher-free pretraining, the masked-position vocabulary projection, non-finite
losses and multi-process runs."""
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

from conftest import ROOT, read_metrics, xla_flags
from distilbert_jax import errors, jobs, train

LOSS_KEYS = ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_hidden", "grad_norm")


def checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


def assert_same_losses(a, b, steps, rtol=0.0, atol=0.0):
  a, b = {m["step"]: m for m in a}, {m["step"]: m for m in b}
  for step in steps:
    for key in LOSS_KEYS:
      if rtol == atol == 0.0:
        assert a[step][key] == b[step][key], (step, key, a[step][key], b[step][key])
      else:
        np.testing.assert_allclose(a[step][key], b[step][key], rtol=rtol, atol=atol, err_msg=f"step {step} {key}")


def cli_args(config, workdir):
  """The `distilbert-jax distill` command line that runs `config` (as overrides of tiny.py)."""
  return [sys.executable, "-m", "distilbert_jax.main", "distill", "--config", str(ROOT / "configs/tiny.py"),
          "--workdir", str(workdir), f"--config.data.sources={tuple(config.data.sources)!r}",
          f"--config.data.cache_dir={config.data.cache_dir}", f"--config.data.max_length={config.data.max_length}",
          f"--config.data.bucket_lengths={tuple(config.data.bucket_lengths)!r}",
          f"--config.train.batch_size={config.train.batch_size}", "--config.train.grad_accum_steps=1",
          f"--config.train.num_steps={config.train.num_steps}", "--config.train.log_every=1",
          f"--config.train.checkpoint_every={config.train.checkpoint_every}",
          "--config.train.progress_bar=false", f"--config.export={str(config.export).lower()}"]


def test_distill_command_runs_end_to_end_and_exports_a_model_transformers_loads(tmp_path, tiny_config):
  workdir = tmp_path / "run"
  config = tiny_config(**{"train.num_steps": 4, "train.checkpoint_every": 2, "export": True})
  result = subprocess.run(cli_args(config, workdir), capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = read_metrics(workdir)
  assert [m["step"] for m in metrics] == [1, 2, 3, 4]
  for key in ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_hidden", "learning_rate", "grad_norm",
              "tokens_per_second", "padded_tokens_per_second", "examples_seen"):
    assert np.isfinite(metrics[-1][key]), key
  assert 0 < metrics[-1]["tokens_per_second"] <= metrics[-1]["padded_tokens_per_second"]
  assert checkpoint_steps(workdir) == [2, 4]
  assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 4
  assert list((workdir / "tensorboard").iterdir())
  import transformers
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(workdir / "export", output_loading_info=True)
  assert type(model).__name__ == "DistilBertForMaskedLM"
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert (workdir / "export" / "tokenizer.json").exists()


def test_metrics_are_sums_over_the_logging_window_divided_once(tmp_path, tiny_config):
  every_step = tmp_path / "every"
  jobs.train_and_evaluate(tiny_config(**{"train.checkpoint_every": 100}), str(every_step))
  windows = tmp_path / "windows"
  jobs.train_and_evaluate(tiny_config(**{"train.checkpoint_every": 100, "train.log_every": 3}), str(windows))
  per_step, per_window = read_metrics(every_step), read_metrics(windows)
  assert [m["step"] for m in per_window] == [3, 6]
  for window, steps in zip(per_window, (per_step[:3], per_step[3:])):
    # Plain means for per-step values; the loss terms are token-weighted, so check their bounds.
    assert window["loss"] == pytest.approx(np.mean([m["loss"] for m in steps]), rel=1e-6)
    assert window["learning_rate"] == pytest.approx(np.mean([m["learning_rate"] for m in steps]), rel=1e-6)
    for key in ("loss_ce", "loss_mlm", "loss_cos", "loss_hidden"):
      values = [m[key] for m in steps]
      assert min(values) * (1 - 1e-6) <= window[key] <= max(values) * (1 + 1e-6), key


def test_resume_from_a_checkpoint_gives_bit_identical_metrics(tmp_path, tiny_config):
  config = tiny_config()
  full = tmp_path / "full"
  jobs.train_and_evaluate(config, str(full))
  # Interrupted after the step-3 checkpoint: drop what came later and run the same command again.
  resumed = tmp_path / "resumed"
  shutil.copytree(full, resumed)
  shutil.rmtree(resumed / "checkpoints" / "6")
  jobs.train_and_evaluate(config, str(resumed))
  assert [m["step"] for m in read_metrics(resumed)] == [1, 2, 3, 4, 5, 6]
  assert_same_losses(read_metrics(full), read_metrics(resumed), steps=range(4, 7))


def test_kill_9_during_training_then_rerun_matches_an_uninterrupted_run(tmp_path, tiny_config):
  config = tiny_config(**{"train.num_steps": 12, "train.checkpoint_every": 2})
  reference = tmp_path / "reference"
  jobs.train_and_evaluate(config, str(reference))
  workdir = tmp_path / "killed"
  proc = subprocess.Popen(cli_args(config, workdir), cwd=tmp_path, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  # Kill as soon as a checkpoint save has begun: orbax writes into a temporary directory first.
  while time.time() < deadline and proc.poll() is None:
    ckpts = workdir / "checkpoints"
    if ckpts.exists() and any(p.name != "2" for p in ckpts.iterdir() if not p.name.startswith(".")):
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  jobs.train_and_evaluate(config, str(workdir))
  assert [m["step"] for m in read_metrics(workdir)] == list(range(1, 13))
  assert_same_losses(read_metrics(reference), read_metrics(workdir), steps=range(1, 13))


@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes_bit_identically(tmp_path, tiny_config, signum):
  config = tiny_config(**{"train.num_steps": 40, "train.checkpoint_every": 1000})
  reference = tmp_path / "reference"
  jobs.train_and_evaluate(config, str(reference))
  workdir = tmp_path / "preempted"
  proc = subprocess.Popen(cli_args(config, workdir), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:  # signal once training has begun
    if (workdir / "metrics.jsonl").exists() and len(read_metrics(workdir)) >= 3:
      break
    time.sleep(0.05)
  proc.send_signal(signum)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signum, stderr[-3000:]
  stopped_at = checkpoint_steps(workdir)
  assert len(stopped_at) == 1 and 3 <= stopped_at[0] < 40, stopped_at  # no checkpoint was due before
  assert f"SIGTERM at step {stopped_at[0]}: checkpoint saved" in stderr
  assert [m["step"] for m in read_metrics(workdir)] == list(range(1, stopped_at[0] + 1))
  rerun = subprocess.run(cli_args(config, workdir), cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert [m["step"] for m in read_metrics(workdir)] == list(range(1, 41))
  assert_same_losses(read_metrics(reference), read_metrics(workdir), steps=range(1, 41))


def test_sigterm_between_logging_steps_resumes_with_every_logged_value_bit_identical(tmp_path, tiny_config,
                                                                                     monkeypatch):
  config = tiny_config(**{"train.num_steps": 20, "train.log_every": 4, "train.checkpoint_every": 1000})
  reference = tmp_path / "reference"
  jobs.train_and_evaluate(config, str(reference))

  class SignalledAt13:  # the batch iterator, which sends SIGTERM while step 13 is prepared
    def __init__(self, iterator):
      self.iterator, self.served = iterator, 0

    def __iter__(self):
      return self

    def __next__(self):
      self.served += 1
      if self.served == 13:
        os.kill(os.getpid(), signal.SIGTERM)
      return next(self.iterator)

    def __getattr__(self, name):
      return getattr(self.iterator, name)

  from distilbert_jax.jobs import distill
  make = distill.input_pipeline.make_batch_iterator
  monkeypatch.setattr(distill.input_pipeline, "make_batch_iterator", lambda *a, **k: SignalledAt13(make(*a, **k)))
  workdir = tmp_path / "preempted"
  with pytest.raises(train.Preempted, match="SIGTERM at step 13"):
    jobs.train_and_evaluate(config, str(workdir))
  assert [m["step"] for m in read_metrics(workdir)] == [4, 8, 12]  # nothing logged at step 13
  monkeypatch.undo()
  jobs.train_and_evaluate(config, str(workdir))
  assert [m["step"] for m in read_metrics(workdir)] == [4, 8, 12, 16, 20]
  # Step 16's window spans the stop (steps 13-16): carried in the checkpoint, it averages all four.
  assert_same_losses(read_metrics(reference), read_metrics(workdir), steps=(4, 8, 12, 16, 20))


def _damage(checkpoint_dir: Path, how: str):
  files = sorted(p for p in checkpoint_dir.rglob("*") if p.is_file() and p.stat().st_size > 0)
  if how == "truncate":  # every array file, to half its size
    for p in files:
      if "ocdbt" in str(p.relative_to(checkpoint_dir)) or p.name.startswith("d"):
        with open(p, "r+b") as f:
          f.truncate(p.stat().st_size // 2)
  else:
    for p in files:
      if p.name in ("_METADATA", "manifest.ocdbt"):
        p.unlink()


@pytest.mark.parametrize("how", ["delete", "truncate"])
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_config, how):
  config = tiny_config()
  full = tmp_path / "full"
  jobs.train_and_evaluate(config, str(full))
  damaged = tmp_path / "damaged"
  shutil.copytree(full, damaged)
  _damage(damaged / "checkpoints" / "6", how)
  jobs.train_and_evaluate(config, str(damaged))  # resumes from step 3
  assert_same_losses(read_metrics(full), read_metrics(damaged), steps=range(4, 7))
  assert [p.name.split(".")[0] for p in (damaged / "unreadable_checkpoints").iterdir()] == ["6"]
  assert checkpoint_steps(damaged) == [3, 6]


def test_no_readable_checkpoint_stops_instead_of_training_from_scratch(tmp_path, tiny_config):
  config = tiny_config()
  jobs.train_and_evaluate(config, str(tmp_path))
  before = read_metrics(tmp_path)
  for step in (3, 6):
    _damage(tmp_path / "checkpoints" / str(step), "delete")
  with pytest.raises(train.TrainingError, match="no readable checkpoint") as error:
    jobs.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(error.value) and isinstance(error.value, errors.Error)
  assert read_metrics(tmp_path) == before


def test_restoring_onto_smaller_meshes_gives_the_same_losses(tmp_path, tiny_config):
  config = lambda **kw: tiny_config(**{"train.checkpoint_every": 2, "train.keep_checkpoints": 10, **kw})
  reference = tmp_path / "reference"  # 8 devices: data 2, fsdp 2, tensor 2
  jobs.train_and_evaluate(config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}), str(reference))
  workdir = tmp_path / "moved"
  shutil.copytree(reference, workdir)
  for step in (4, 6):
    shutil.rmtree(workdir / "checkpoints" / str(step))
  jobs.train_and_evaluate(config(**{"mesh.data": 4}), str(workdir))  # 4 devices from step 2
  shutil.rmtree(workdir / "checkpoints" / "6")
  jobs.train_and_evaluate(config(**{"mesh.data": 1}), str(workdir))  # 1 device from step 4
  assert [m["step"] for m in read_metrics(workdir)] == [1, 2, 3, 4, 5, 6]
  assert_same_losses(read_metrics(reference), read_metrics(workdir), steps=range(3, 7), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mesh", [(1, 1, 1), (2, 2, 2)])
def test_meshes_give_the_same_losses_as_eight_way_data_parallel(tmp_path, tiny_config, mesh):
  overrides = {"train.num_steps": 3, "train.checkpoint_every": 100, "export": True}
  reference = jobs.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "dp"))
  data, fsdp, tensor = mesh
  other = jobs.train_and_evaluate(
      tiny_config(**overrides, **{"mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor}),
      str(tmp_path / "other"))
  assert_same_losses(read_metrics(tmp_path / "dp"), read_metrics(tmp_path / "other"), steps=range(1, 4),
                     rtol=1e-5, atol=1e-5)
  from safetensors.numpy import load_file
  p, q = (load_file(Path(r["export_dir"]) / "model.safetensors") for r in (reference, other))
  for name in p:
    np.testing.assert_allclose(p[name], q[name], atol=1e-5, err_msg=name)
  assert set(other["padded_lengths_seen"]) <= set(tiny_config().data.bucket_lengths)


def test_gradient_accumulation_equals_one_batch_k_times_larger(tmp_path, tiny_config):
  results = []
  for k in (1, 4):
    config = tiny_config(**{"train.num_steps": 3, "train.grad_accum_steps": k, "train.checkpoint_every": 100})
    config.student.config_overrides = {"dropout": 0.0, "attention_dropout": 0.0}
    jobs.train_and_evaluate(config, str(tmp_path / f"k{k}"))
    results.append(read_metrics(tmp_path / f"k{k}"))
  assert_same_losses(*results, steps=range(1, 4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("accum", [1, 2])
def test_logits_at_masked_positions_only_equal_the_full_projection(tmp_path, tiny_config, accum):
  results = []
  for only_masked in (False, True):
    config = tiny_config(**{"train.num_steps": 2, "train.checkpoint_every": 100, "train.grad_accum_steps": accum,
                            "train.batch_size": 8 * accum})
    config.loss.ce_masked_only = True
    config.loss.alpha_mse = 0.5
    config.loss.logits_at_masked_only = only_masked
    jobs.train_and_evaluate(config, str(tmp_path / str(only_masked)))
    results.append(read_metrics(tmp_path / str(only_masked)))
  full, gathered = ({m["step"]: m for m in r} for r in results)
  for step, rtol, atol in ((1, 1e-6, 1e-7), (2, 1e-5, 1e-6)):  # step 2: after an update with rounding differences
    for key in ("loss", "loss_mlm", "loss_cos", "loss_hidden", "grad_norm"):
      np.testing.assert_allclose(gathered[step][key], full[step][key], rtol=rtol, err_msg=f"step {step} {key}")
    # KL and MSE between a student and the teacher it was copied from are differences of nearly
    # equal numbers (loss_ce is about 2e-3): compared absolutely.
    for key in ("loss_ce", "loss_mse"):
      np.testing.assert_allclose(gathered[step][key], full[step][key], rtol=rtol, atol=atol, err_msg=f"step {step} {key}")


def test_teacher_free_mlm_pretraining_lowers_the_mlm_loss(tmp_path, tiny_config):
  config = tiny_config(**{"train.num_steps": 60, "train.checkpoint_every": 1000, "train.batch_size": 16,
                          "train.log_every": 5})
  config.teacher.random_config = {}
  config.student.init = "random"
  config.student.type = "bert"
  config.student.random_config = dict(model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
  for name in ("ce", "cos", "hidden"):
    config.loss[f"alpha_{name}"] = 0.0
  config.loss.logits_at_masked_only = True
  config.optim.learning_rate = 3e-3
  jobs.train_and_evaluate(config, str(tmp_path))
  metrics = read_metrics(tmp_path)
  losses = [m["loss_mlm"] for m in metrics]
  assert "loss_mlm" in metrics[0] and "loss_ce" not in metrics[0]
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2]), losses


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_config):
  config = tiny_config(**{"train.num_steps": 6, "train.checkpoint_every": 1})
  config.optim.warmup_fraction = 0.0
  config.optim.learning_rate = 1e30  # step 1 is finite and saved; its update makes step 2 overflow
  with pytest.raises(train.TrainingError, match=r"non-finite loss or gradients in 1 step\(s\) up to step 2.*\(step 1\)"):
    jobs.train_and_evaluate(config, str(tmp_path))
  assert checkpoint_steps(tmp_path) == [1]
  metrics = read_metrics(tmp_path)
  assert [m["step"] for m in metrics] == [1, 2]
  assert metrics[1]["skipped_steps"] == 1 and "loss" not in metrics[1]  # no finite loss to average


@pytest.mark.parametrize("field, value, message", [
    ("train.batch_size", 6, "must be a positive multiple of train.grad_accum_steps"),
    ("loss.alpha_ce", -1.0, "loss.alpha_ce=-1.0 must be >= 0"),
    ("teacher.path", "no/such/teacher", "no/such/teacher: no such directory"),
    ("data.tokenizer_dir", "no/such/tokenizer", "no/such/tokenizer: no such directory"),
    ("data.sources", ("text:no/such/file.txt",), "no/such/file.txt: no such file"),
    ("mask.token_counts", "no/counts.npy", "no/counts.npy: no such file"),
    ("data.max_length", 256, "data.max_length=256: longer than max_position_embeddings=128 of teacher.random_config"),
    ("data.bucket_lengths", (32, 256), r"data.bucket_lengths=\(32, 256\): longer than max_position_embeddings=128"),
])
def test_config_problems_are_reported_before_any_model_is_built(tmp_path, tiny_config, field, value, message):
  config = tiny_config(**{field: value, "train.grad_accum_steps": 4})
  with pytest.raises(errors.Error, match=message):
    jobs.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "token_cache").exists() and not (tmp_path / "checkpoints").exists()


def test_a_corpus_without_text_is_one_line_and_leaves_no_workdir(tmp_path, tiny_config):
  blank = tmp_path / "blank.txt"
  blank.write_text("\n  \n")
  config = tiny_config(**{"data.sources": (str(blank),), "data.cache_dir": ""})  # a plain path, WORKDIR/token_cache
  with pytest.raises(errors.Error, match="blank.txt: empty corpus") as error:
    jobs.train_and_evaluate(config, str(tmp_path / "run"))
  assert "\n" not in str(error.value) and not (tmp_path / "run").exists()


def test_teacher_losses_without_a_teacher_and_a_tokenizer_of_another_vocabulary_are_rejected(tmp_path, tiny_config):
  config = tiny_config()
  config.teacher.random_config = {}
  config.student.init = "random"
  with pytest.raises(errors.ConfigError, match="teacher-free training .* allows only loss.alpha_mlm"):
    jobs.train_and_evaluate(config, str(tmp_path))
  config = tiny_config()
  config.teacher.random_config.vocab_size = 1000
  with pytest.raises(errors.ConfigError, match="has 30522 tokens but the model's vocabulary has 1000"):
    jobs.train_and_evaluate(config, str(tmp_path))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_with_four_devices_each_match_one_process_with_eight(tmp_path, tiny_config):
  config = tiny_config(**{"train.num_steps": 3, "train.checkpoint_every": 100})
  jobs.train_and_evaluate(config, str(tmp_path / "single"))
  config.train.multihost = True
  workdir = tmp_path / "multi"
  script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import ml_collections; "
            f"from distilbert_jax import jobs; "
            f"jobs.train_and_evaluate(ml_collections.ConfigDict({config.to_dict()!r}), {str(workdir)!r})")
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS=xla_flags(4), JAX_PLATFORMS="cpu",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
  assert_same_losses(read_metrics(tmp_path / "single"), read_metrics(workdir), steps=range(1, 4),
                     rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_another_model_is_an_error_and_is_left_in_place(tmp_path, tiny_config):
  jobs.train_and_evaluate(tiny_config(), str(tmp_path))
  other = tiny_config()
  other.student.layers = (0, 1, 3)  # three student layers instead of two
  with pytest.raises(train.TrainingError, match="holds another model than this config builds"):
    jobs.train_and_evaluate(other, str(tmp_path))
  assert checkpoint_steps(tmp_path) == [3, 6] and not (tmp_path / "unreadable_checkpoints").exists()


def test_a_bfloat16_teacher_and_student_train_on_cpu_close_to_float32(tmp_path, tiny_config):
  results = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(**{"train.num_steps": 2, "train.checkpoint_every": 100})
    config.teacher.dtype = config.student.dtype = dtype
    jobs.train_and_evaluate(config, str(tmp_path / dtype))
    results[dtype] = read_metrics(tmp_path / dtype)
  for key in ("loss_mlm", "loss_cos", "loss_hidden"):  # bfloat16 products, float32 accumulation
    np.testing.assert_allclose(results["bfloat16"][0][key], results["float32"][0][key], rtol=2e-2, err_msg=key)


def test_a_finite_loss_with_overflowing_gradients_does_not_reach_the_state():
  import jax.numpy as jnp
  import optax
  params = {"w": jnp.ones((3,), jnp.float32)}
  tx = optax.adamw(1e-2)
  state = train.init_state(params, tx, seed=0)
  grads = {"w": jnp.asarray([1.0, jnp.inf, 0.0], jnp.float32)}
  finite = train.is_finite_update(jnp.float32(0.5), optax.tree.norm(grads))
  assert not bool(finite)
  new = train.apply_gradients(state, grads, finite, tx)
  assert int(new.step) == 1
  np.testing.assert_array_equal(np.asarray(new.params["w"]), np.ones(3))
  good = train.apply_gradients(state, {"w": jnp.ones((3,))}, train.is_finite_update(jnp.float32(0.5), jnp.float32(1.0)), tx)
  assert not np.array_equal(np.asarray(good.params["w"]), np.ones(3))
