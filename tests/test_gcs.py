"""gs:// work directories, models and data against a Cloud Storage emulator on 127.0.0.1 (the
`gcs_bucket` fixture): atomic outputs and the completion markers, exports that load back, runs
that resume after kill -9, two processes sharing one checkpoint, and one-line errors for a
bucket that cannot be used."""
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, read_metrics, xla_flags
import test_finetune
from distilbert_jax import atomic, convert, jobs, storage
from test_train import LOSS_KEYS, assert_same_losses, cli_args

sentiment = test_finetune.sentiment  # the fixture: its train.tsv and dev.tsv go to the bucket


def remote_steps(workdir) -> list:
  """The steps of the committed checkpoints in a gs:// work directory (on object storage orbax
  writes a step's directory in place and commits it with commit_success.txt, last)."""
  directory = storage.path(workdir) / "checkpoints"
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "commit_success.txt").exists())


def assert_same_params(a, b):
  flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def test_atomic_writes_on_gcs_appear_whole_or_not_at_all(gcs_bucket):
  target = f"{gcs_bucket}/atomic/report.json"
  atomic.write_text(target, "first\n")
  with pytest.raises(RuntimeError):
    with atomic.writing(target, "w") as f:
      f.write("half of the second")
      raise RuntimeError("the writer fails")
  assert storage.path(target).read_text() == "first\n"
  assert [p.name for p in storage.path(f"{gcs_bucket}/atomic").iterdir()] == ["report.json"]
  with pytest.raises(RuntimeError):
    with atomic.directory(f"{gcs_bucket}/atomic/out", replace=True) as tmp:
      (tmp / "a.txt").write_text("a")
      raise RuntimeError("the writer fails")
  assert not storage.path(f"{gcs_bucket}/atomic/out").exists()


def test_an_export_on_gcs_loads_back_equal_and_a_half_written_one_is_refused(gcs_bucket, tiny_bert, tmp_path):
  model, params = convert.load_pretrained(tiny_bert, head="base")
  uri = f"{gcs_bucket}/models/tiny"
  convert.save_pretrained(model, params, uri, tokenizer_dir=tiny_bert)
  names = {p.name for p in storage.path(uri).iterdir()}
  assert {"config.json", "model.safetensors", "tokenizer.json", storage.COMPLETE_MARKER} <= names
  assert storage.IN_PROGRESS_MARKER not in names
  convert.save_pretrained(model, params, tmp_path / "local", tokenizer_dir=tiny_bert)
  _, local = convert.load_pretrained(str(tmp_path / "local"), head="base")
  _, loaded = convert.load_pretrained(uri, head="base")
  assert_same_params(local, loaded)
  with pytest.raises(convert.ConversionError, match="not empty"):
    convert.save_pretrained(model, params, uri)  # an existing output needs overwrite, as locally

  # A writer that stopped half way: the in-progress marker stands, the completion marker is not there.
  half = f"{gcs_bucket}/models/half"
  fs, root = storage.filesystem(half)
  fs.pipe_file(f"{root}/{storage.IN_PROGRESS_MARKER}", b"")
  fs.put_file(os.path.join(tiny_bert, "config.json"), f"{root}/config.json")
  with pytest.raises(storage.StorageError, match="incomplete"):
    convert.load_pretrained(half)
  result = subprocess.run([sys.executable, "-m", "distilbert_jax.main", "predict", "--model", half, "--input", "-"],
                          input="a text\n", capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert result.returncode == 2
  error_lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert error_lines == [f"distilbert-jax: error: {half}: incomplete (its writer stopped before "
                         f"{storage.COMPLETE_MARKER} was written); rerun what writes it, or delete it"], result.stderr


def test_a_changed_remote_model_gives_a_new_local_copy(gcs_bucket, tmp_path):
  uri = f"{gcs_bucket}/mirror/file.txt"
  atomic.write_text(uri, "one")
  first = storage.local_copy(uri)
  assert open(first).read() == "one" and storage.local_copy(uri) == first
  atomic.write_text(uri, "two")
  second = storage.local_copy(uri)
  assert second != first and open(second).read() == "two"


def test_finetune_reads_its_model_and_data_from_gcs_writes_there_and_resumes(gcs_bucket, tiny_bert, sentiment):
  bucket = f"{gcs_bucket}/finetune"
  fs, _ = storage.filesystem(bucket)
  for name in ("train.tsv", "dev.tsv"):
    storage.upload_file(sentiment / name, f"{bucket}/data/{name}")
  model, params = convert.load_pretrained(tiny_bert, head="base")
  convert.save_pretrained(model, params, f"{bucket}/model", tokenizer_dir=tiny_bert)
  config = test_finetune.sentiment_config(f"{bucket}/model", sentiment, **{"train.num_steps": 20, "train.log_every": 1,
                                                              "train.eval_every": 10})
  config.data.train, config.data.eval = f"{bucket}/data/train.tsv", f"{bucket}/data/dev.tsv"
  workdir = f"{bucket}/run"
  jobs.train_and_evaluate(config, workdir)
  full = read_metrics(workdir)
  assert [m["step"] for m in full] == list(range(1, 21)) and remote_steps(workdir) == [10, 20]
  for name in ("eval_results.json", "best.json", "config.json", "best", "export", "tensorboard"):
    assert (storage.path(workdir) / name).exists(), name
  assert storage.is_complete_directory(f"{workdir}/export")
  _, exported = convert.load_pretrained(f"{workdir}/export", head="sequence_classification")
  best, _ = convert.load_pretrained(f"{workdir}/best", head="sequence_classification")
  assert best is not None and exported
  # Resume: the last checkpoint gone, the rerun goes on from step 10 and logs what the first did.
  fs.rm(storage.filesystem(f"{workdir}/checkpoints/20")[1], recursive=True)
  jobs.train_and_evaluate(config, workdir)
  resumed = read_metrics(workdir)
  assert [m["step"] for m in resumed] == list(range(1, 21))
  for x, y in zip(full[10:], resumed[10:]):
    for key in ("loss", "loss_task", "grad_norm", "eval_accuracy"):
      assert x.get(key) == y.get(key), (x["step"], key)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_two_processes(config, workdir, cwd):
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS=xla_flags(4), JAX_PLATFORMS="cpu",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen(cli_args(config, workdir) + ["--config.train.multihost=true"], env=env, cwd=cwd,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return procs


def _finish(procs) -> list:
  return [p.communicate(timeout=600)[0] for p in procs]


@pytest.mark.slow
def test_two_processes_share_one_gcs_checkpoint_and_resume_after_sigterm_and_kill_9(gcs_bucket, tiny_config,
                                                                                     tmp_path):
  config = tiny_config(**{"train.num_steps": 8, "train.checkpoint_every": 4, "train.keep_checkpoints": 5,
                          "export": True})
  config.data.cache_dir = ""  # built by process 0 on Cloud Storage, read by process 1
  reference = f"{gcs_bucket}/two/reference"
  outputs = _finish(procs := _start_two_processes(config, reference, tmp_path))
  assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
  assert remote_steps(reference) == [4, 8]  # one checkpoint per step, which both processes write
  caches = list((storage.path(reference) / "token_cache").iterdir())
  assert len(caches) == 1 and storage.is_complete_directory(caches[0])

  # SIGTERM to one process: both stop at the same step, with one checkpoint of it.
  workdir = f"{gcs_bucket}/two/interrupted"
  procs = _start_two_processes(config, workdir, tmp_path)
  deadline = time.time() + 600
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if (storage.path(workdir) / "metrics.jsonl").exists() and read_metrics(workdir):
      break
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)
  outputs = _finish(procs)
  assert [p.returncode for p in procs] == [128 + signal.SIGTERM] * 2, outputs[0][-3000:] + outputs[1][-3000:]
  stopped = remote_steps(workdir)
  assert len(stopped) == 1 and stopped[0] < 4, stopped
  assert f"SIGTERM at step {stopped[0]}: checkpoint saved in {workdir}/checkpoints" in outputs[0]

  # The same command resumes; kill -9 of both once it has committed the next checkpoint.
  procs = _start_two_processes(config, workdir, tmp_path)
  while time.time() < deadline and all(p.poll() is None for p in procs) and remote_steps(workdir)[-1:] != [4]:
    time.sleep(0.05)
  for p in procs:
    p.send_signal(signal.SIGKILL)
  _finish(procs)
  assert remote_steps(workdir) == [stopped[0], 4]
  outputs = _finish(procs := _start_two_processes(config, workdir, tmp_path))
  assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
  assert [m["step"] for m in read_metrics(workdir)] == list(range(1, 9))
  assert_same_losses(read_metrics(reference), read_metrics(workdir), steps=range(1, 9))
  assert set(LOSS_KEYS) <= set(read_metrics(workdir)[-1])
  _, exported = convert.load_pretrained(f"{workdir}/export")
  _, uninterrupted = convert.load_pretrained(f"{reference}/export")
  assert_same_params(uninterrupted, exported)


def _start_cli(args, env, cwd):
  return subprocess.Popen([sys.executable, "-m", "distilbert_jax.main", *args], env=env, cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _status_and_error_lines(proc):
  _, stderr = proc.communicate(timeout=300)
  return proc.returncode, [line for line in stderr.splitlines() if line.strip()]


def test_a_bucket_that_cannot_be_used_is_one_line_and_exit_2_before_any_model(gcs_bucket, tmp_path):
  distill = ["distill", "--config", str(ROOT / "configs/tiny.py")]
  # Nothing listens on this port: the endpoint is unreachable (gcsfs's retries take their time).
  unreachable = dict(os.environ, STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{_free_port()}")
  unreachable.pop("TENSORSTORE_GCS_HTTP_URL", None)
  procs = [  # side by side: each mostly waits
      _start_cli(distill + ["--workdir", "gs://no-such-bucket/run"], dict(os.environ), tmp_path),
      _start_cli(distill + ["--workdir", f"{gcs_bucket}/run"], unreachable, tmp_path),
      # An output of a command that is not a run: checked before the model is read.
      _start_cli(["predict", "--model", "no/such/model", "--input", "-", "--out", "gs://no-such-bucket/p.jsonl"],
                 dict(os.environ), tmp_path)]
  (missing, missing_lines), (down, down_lines), (out, out_lines) = [_status_and_error_lines(p) for p in procs]
  assert missing == 2 and len(missing_lines) == 1, missing_lines
  assert missing_lines[0].startswith("distilbert-jax: error: gs://no-such-bucket/run: no such bucket"), missing_lines
  assert down == 2 and len(down_lines) == 1, down_lines
  assert down_lines[0].startswith(f"distilbert-jax: error: {gcs_bucket}/run: cannot write there:"), down_lines
  assert out == 2 and len(out_lines) == 1, out_lines
  assert out_lines[0].startswith("distilbert-jax: error: gs://no-such-bucket/p.jsonl: no such bucket"), out_lines


def test_predict_reads_its_model_and_input_from_gcs_and_writes_its_output_there(gcs_bucket, tiny_bert, tmp_path):
  model, params = convert.load_pretrained(tiny_bert, head="sequence_classification", init_missing_heads=True,
                                          num_labels=2)
  local_model = tmp_path / "model"
  convert.save_pretrained(model, params, local_model, tokenizer_dir=tiny_bert)
  remote = f"{gcs_bucket}/predict"
  convert.save_pretrained(model, params, f"{remote}/model", tokenizer_dir=tiny_bert)
  (tmp_path / "in.txt").write_text("a good film\na bad day\nso so\n")
  storage.upload_file(tmp_path / "in.txt", f"{remote}/in.txt")
  command = [sys.executable, "-m", "distilbert_jax.main", "predict"]
  local = subprocess.run(command + ["--model", str(local_model), "--input", str(tmp_path / "in.txt"),
                                    "--out", str(tmp_path / "out.jsonl")], capture_output=True, text=True, timeout=300)
  assert local.returncode == 0, local.stderr[-2000:]
  result = subprocess.run(command + ["--model", f"{remote}/model", "--input", f"{remote}/in.txt",
                                     "--out", f"{remote}/out/predictions.jsonl"], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  written = storage.path(f"{remote}/out/predictions.jsonl").read_text()
  assert written == (tmp_path / "out.jsonl").read_text() and len(written.splitlines()) == 3


def test_a_permission_error_is_reported_as_one_line_naming_the_uri(monkeypatch):
  # The emulator has no access control: a file system that refuses like Cloud Storage's 403 stands in.
  class Refusing:
    def pipe_file(self, path, data):
      raise PermissionError("403 caller does not have storage.objects.create access to the bucket")
  monkeypatch.setattr(storage, "filesystem", lambda uri: (Refusing(), "bucket/run"))
  with pytest.raises(storage.StorageError) as raised:
    storage.check_writable("gs://bucket/run")
  assert str(raised.value) == ("gs://bucket/run: no permission to write there (403 caller does not have "
                               "storage.objects.create access to the bucket)")
