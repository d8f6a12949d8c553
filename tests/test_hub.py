"""Models named by Hugging Face Hub repo ids, read from a cache laid out as huggingface_hub lays
it out (models--ORG--NAME/{refs,blobs,snapshots}); every test is offline (HF_HUB_OFFLINE=1)."""
import hashlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import jax
import numpy as np
import pytest
from huggingface_hub import errors as hub_errors

from conftest import ROOT
from distilbert_jax import configuration, convert, errors
from distilbert_jax.convert import hub

REPO = "sentence-transformers/all-MiniLM-L6-v2"
MAIN = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"  # the commit refs/main names
OLDER = "7dbbc90392e2f80f3d3c277d6e90027e55de9125"  # another snapshot, reached only by its hash
# The files every model directory from the Hub has, as wanted_files asks for them.
SNAPSHOT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                  "special_tokens_map.json", "modules.json", "sentence_bert_config.json",
                  "config_sentence_transformers.json", "1_Pooling/config.json")


def _add_snapshot(repo_dir: Path, commit: str, source: Path, files=SNAPSHOT_FILES) -> Path:
  """snapshots/<commit>/<file> as relative symlinks into blobs/<sha256>, as huggingface_hub writes them."""
  snapshot = repo_dir / "snapshots" / commit
  for name in files:
    digest = hashlib.sha256((source / name).read_bytes()).hexdigest()
    blob = repo_dir / "blobs" / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
      try:
        os.link(source / name, blob)
      except OSError:  # another file system
        shutil.copyfile(source / name, blob)
    link = snapshot / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
  return snapshot


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, minilm):
  """A Hugging Face cache holding all-MiniLM-L6-v2 at MAIN (refs/main) and at OLDER."""
  cache = tmp_path_factory.mktemp("hf_hub_cache")
  repo_dir = cache / ("models--" + REPO.replace("/", "--"))
  _add_snapshot(repo_dir, MAIN, Path(minilm))
  _add_snapshot(repo_dir, OLDER, Path(minilm), files=("config.json", "model.safetensors", "tokenizer.json"))
  (repo_dir / "refs").mkdir()
  (repo_dir / "refs" / "main").write_text(MAIN)  # no newline: huggingface_hub reads the hash as is
  return cache


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
  """HF_HUB_OFFLINE=1 and an empty cache of this test's own, unless a test points it at hub_cache."""
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  use_cache(monkeypatch, tmp_path / "empty_cache")
  hub._resolve_repo.cache_clear()
  yield
  hub._resolve_repo.cache_clear()


def use_cache(monkeypatch, cache):
  # huggingface_hub reads its environment once, when imported: the constants are what it uses.
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_the_cache_is_laid_out_as_huggingface_hub_reads_it(hub_cache):
  cached = huggingface_hub.try_to_load_from_cache(REPO, "config.json", cache_dir=str(hub_cache))
  assert cached == str(hub_cache / f"models--sentence-transformers--all-MiniLM-L6-v2/snapshots/{MAIN}/config.json")
  (repo,) = huggingface_hub.scan_cache_dir(hub_cache).repos
  assert repo.repo_id == REPO and {r.commit_hash for r in repo.revisions} == {MAIN, OLDER}


def test_a_repo_id_loads_the_same_parameters_as_its_local_directory(hub_cache, minilm, monkeypatch):
  use_cache(monkeypatch, hub_cache)
  snapshot = hub_cache / f"models--sentence-transformers--all-MiniLM-L6-v2/snapshots/{MAIN}"
  assert hub.resolve(REPO) == str(snapshot)
  model, params = convert.load_pretrained(REPO, head="base")
  local_model, local_params = convert.load_pretrained(minilm, head="base")
  assert model.config == local_model.config
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(local_params)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                   jax.tree_util.tree_leaves(local_params)))
  # The tokenizer is found beside the weights, as for a local directory.
  assert Path(getattr(model, convert.SOURCE_ATTR)) == snapshot and (snapshot / "tokenizer.json").is_file()
  assert convert.read_model_config(REPO) == convert.read_model_config(minilm)


def test_a_revision_is_pinned_by_hash_or_named_by_branch(hub_cache, monkeypatch):
  use_cache(monkeypatch, hub_cache)
  snapshots = hub_cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots"
  assert hub.resolve(f"{REPO}@{OLDER}") == str(snapshots / OLDER)
  assert hub.resolve(f"{REPO}@main") == str(snapshots / MAIN)
  assert convert.read_model_config(f"{REPO}@{OLDER}").hidden_size == 384
  with pytest.raises(hub.HubError, match=rf"^{REPO}@v9: no such directory, and offline and not in the cache "
                     r"\(HF_HUB_OFFLINE=1"):
    hub.resolve(f"{REPO}@v9")


def test_offline_a_partly_downloaded_snapshot_is_used(hub_cache, monkeypatch, tmp_path):
  """huggingface_hub's tree listing (trees/<hash>.json) names files we never downloaded (the
  other weight formats): offline, the snapshot is still the model directory."""
  import json
  use_cache(monkeypatch, tmp_path / "cache")
  shutil.copytree(hub_cache, tmp_path / "cache", symlinks=True)
  repo_dir = tmp_path / "cache" / "models--sentence-transformers--all-MiniLM-L6-v2"
  listed = [*SNAPSHOT_FILES, "pytorch_model.bin", "onnx/model.onnx", "README.md"]
  (repo_dir / "trees").mkdir()
  (repo_dir / "trees" / f"{MAIN}.json").write_text(json.dumps(
      {"format_version": 1, "files": {f: {"size": 1, "blob_id": "0" * 40} for f in listed}}))
  assert hub.resolve(REPO) == str(repo_dir / "snapshots" / MAIN)


@pytest.mark.parametrize("name, is_repo", [
    ("bert-base-uncased", True), ("sentence-transformers/all-MiniLM-L6-v2", True), ("org/name@v1.0", True),
    ("./org/name", False), ("/abs/org/name", False), ("~/models/x", False), ("org/name/", False),
    ("a/b/c", False), ("org--x/name", False), ("org/na me", False), ("org/name@", False),
])
def test_names_that_are_repo_ids_and_names_that_are_paths(name, is_repo):
  assert hub.is_repo_id(name) == is_repo


def test_a_name_whose_first_component_exists_is_a_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "runs").mkdir()
  assert not hub.is_repo_id("runs/missing") and hub.is_repo_id("elsewhere/missing")
  with pytest.raises(convert.ConversionError, match=r"^runs/missing: no such directory$"):
    convert.load_pretrained("runs/missing")
  (tmp_path / "org" / "name").mkdir(parents=True)
  assert hub.resolve("org/name") == "org/name"  # a local directory wins over a repo of that name


def test_a_missing_repo_offline_is_one_line_and_exit_status_2(tmp_path):
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT),
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "distilbert_jax.main", "convert", "--to", "flax",
                           "no-such-org/no-such-model", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2, result.stderr
  assert result.stderr.splitlines() == [
      "distilbert-jax: error: no-such-org/no-such-model: no such directory, and offline and not in the cache "
      f"(HF_HUB_OFFLINE=1, cache {tmp_path / 'cache'})"]
  assert not (tmp_path / "out").exists()


def test_convert_takes_a_repo_id_and_copies_its_tokenizer(hub_cache, monkeypatch, tmp_path):
  use_cache(monkeypatch, hub_cache)
  convert.convert_main("flax", REPO, str(tmp_path / "flax"), head="base")
  assert (tmp_path / "flax" / "tokenizer.json").is_file() and (tmp_path / "flax" / "params").is_dir()


# ----------------------------------------------------------------------------- the Hub, faked

def _hub_error(cls, message="404"):
  error = cls.__new__(cls)  # their constructors want an HTTP response
  Exception.__init__(error, message)
  return error


@pytest.fixture
def fake_hub(monkeypatch):
  """Online as far as hub.py can tell, with model_info and snapshot_download replaced: nothing
  reaches the network."""
  calls = {}
  monkeypatch.setattr(hub, "_is_offline", lambda: False)

  def install(files=None, snapshot=None):
    def model_info(self, repo_id, revision=None):
      if isinstance(files, Exception):
        raise files
      return types.SimpleNamespace(siblings=[types.SimpleNamespace(rfilename=f) for f in files])

    def snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None, local_files_only=False):
      calls.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns, local_files_only=local_files_only)
      if isinstance(snapshot, Exception):
        raise snapshot
      return snapshot
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls
  return install


def test_online_only_the_files_a_model_directory_needs_are_downloaded(fake_hub, tmp_path):
  bert_base_uncased = [".gitattributes", "LICENSE", "README.md", "config.json", "coreml/model.mlmodel",
                       "flax_model.msgpack", "model.onnx", "model.safetensors", "pytorch_model.bin",
                       "rust_model.ot", "tf_model.h5", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
  calls = fake_hub(files=bert_base_uncased, snapshot=str(tmp_path))
  assert hub.resolve("bert-base-uncased@main") == str(tmp_path)
  assert calls["repo_id"] == "bert-base-uncased" and calls["revision"] == "main" and not calls["local_files_only"]
  assert sorted(calls["allow_patterns"]) == ["config.json", "model.safetensors", "tokenizer.json",
                                             "tokenizer_config.json", "vocab.txt"]
  sharded = ["config.json", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
             "pytorch_model-00002-of-00002.bin", "onnx/model.onnx"]
  assert hub.wanted_files(sharded) == sharded[:4]


@pytest.mark.parametrize("listing, snapshot, message", [
    (_hub_error(hub_errors.RepositoryNotFoundError), None,
     r"^org/nothing: no such directory, and repo not found on the Hugging Face Hub"),
    (_hub_error(hub_errors.GatedRepoError), None, r"^org/nothing: gated repo on the Hugging Face Hub"),
    (_hub_error(hub_errors.RevisionNotFoundError), None, r"^org/nothing: revision None not found"),
    (ConnectionError("unreachable"), hub_errors.LocalEntryNotFoundError("not cached"),
     r"^org/nothing: no such directory, and no network: the Hugging Face Hub cannot be reached"),
])
def test_hub_failures_are_one_line(fake_hub, listing, snapshot, message):
  fake_hub(files=listing, snapshot=snapshot)
  with pytest.raises(hub.HubError, match=message) as raised:
    hub.resolve("org/nothing")
  assert "\n" not in str(raised.value)


# ----------------------------------------------------------------------------- config checks

def test_finetune_checks_accept_repo_ids_for_model_and_teacher(hub_cache, monkeypatch):
  from configs import glue
  from distilbert_jax.jobs import checks, finetune
  use_cache(monkeypatch, hub_cache)
  config = glue.get_config()
  config.task = "rte"
  config.model.path = config.teacher.path = REPO
  finetune.check_config(config, data=False)
  snapshot = str(hub_cache / f"models--sentence-transformers--all-MiniLM-L6-v2/snapshots/{MAIN}")
  assert checks.check_directory(REPO, "model.path") == snapshot
  resolved = configuration.resolve_paths(config)
  assert resolved.model.path == resolved.teacher.path == snapshot
  finetune.check_config(resolved, data=False)


def test_distill_checks_accept_a_repo_id_for_the_teacher(hub_cache, monkeypatch, tiny_config):
  from distilbert_jax.jobs import distill
  use_cache(monkeypatch, hub_cache)
  config = tiny_config(**{"teacher.path": REPO, "teacher.random_config": None})
  distill.check_config(config, data=False)
  resolved = configuration.resolve_paths(config)
  assert Path(resolved.teacher.path, "tokenizer.json").is_file()
  distill.check_config(resolved)  # the tokenizer, its vocabulary and the corpus too


def test_a_bad_repo_id_in_a_config_fails_when_the_config_is_read(tmp_path, monkeypatch):
  from configs import glue
  from distilbert_jax.jobs import checks
  monkeypatch.chdir(tmp_path)
  config = glue.get_config()
  config.model.path = "org/missing"
  with pytest.raises(errors.ConfigError, match=r"^org/missing: no such directory, and offline and not in the "
                     r"cache \(HF_HUB_OFFLINE=1, .*\) \(model\.path\)$"):
    configuration.resolve_paths(config)
  with pytest.raises(errors.ConfigError, match=r"^no/such/dir: no such directory \(teacher\.path\)$"):
    checks.check_directory("no/such/dir", "teacher.path")


def test_evaluate_takes_a_repo_id_and_a_missing_one_is_one_line(hub_cache, monkeypatch, tmp_path):
  from distilbert_jax.tasks import evaluate_command
  with pytest.raises(hub.HubError, match=r"^org/missing: no such directory, and offline and not in the cache"):
    evaluate_command.evaluate_main("org/missing", "glue/rte", str(tmp_path))
  use_cache(monkeypatch, hub_cache)
  # Found and read from its snapshot: MiniLM has no classification head, the next thing to fail.
  with pytest.raises(convert.ConversionError, match=rf"/snapshots/{MAIN}: missing keys \['classifier.bias'"):
    evaluate_command.evaluate_main(REPO, "glue/rte", str(tmp_path))
