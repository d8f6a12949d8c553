"""Model names that are Hugging Face Hub repo ids: resolved to their snapshot directory in the
user's Hugging Face cache, so the rest of the code sees local directories only.

    hub.resolve("runs/rte/export")                           # a local directory, as is
    hub.resolve("sentence-transformers/all-MiniLM-L6-v2")    # .../models--sentence-transformers--.../snapshots/<hash>
    hub.resolve("bert-base-uncased@v1")                      # ID@REVISION: a branch, tag or commit hash

Downloads go through `huggingface_hub.snapshot_download`, which honours HF_HOME, HF_HUB_CACHE,
HF_HUB_OFFLINE and the token of `hf auth login`; only the files a model directory needs are
fetched: config.json, one format of weights (the first of read_hf_state_dict's order the repo
has), the tokenizer files and the sentence-transformers module files.

A name is a local path when it is an existing directory, starts with ".", "/" or "~", ends with
"/", has more than one "/", or its first component is an existing directory; otherwise, when it
is a valid repo id, it is one (so `org/name` and `bert-base-uncased` reach the Hub).
"""
from __future__ import annotations

import fnmatch
import functools
import logging
import os
import re

from distilbert_jax import storage
from distilbert_jax.convert.names import ConversionError

log = logging.getLogger(__name__)

# The tokenizer files a model directory may hold (copied along by every writer in directories.py).
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")
MODULE_FILES = ("config.json", *TOKENIZER_FILES, "modules.json", "sentence_bert_config.json",
                "config_sentence_transformers.json", "1_Pooling/*", "2_Normalize/*")
# In read_hf_state_dict's order; our own Flax directory (params/, an orbax checkpoint) last.
WEIGHT_FORMATS = (("model.safetensors",), ("model.safetensors.index.json", "model-*.safetensors"),
                  ("pytorch_model.bin",), ("pytorch_model.bin.index.json", "pytorch_model-*.bin"),
                  ("flax_model.msgpack",), ("params/*",))
# huggingface_hub's own rule (validate_repo_id), checked here so that a path is never sent there.
REPO_ID = re.compile(r"^(?:[\w\-.]+/)?[\w\-.]+$")


class HubError(ConversionError):
  """A model name that is neither an existing directory nor a repo the Hub or the cache has."""


def _split(name: str) -> tuple[str, str | None]:
  repo_id, at, revision = name.partition("@")
  return repo_id, (revision if at else None)


def is_repo_id(name) -> bool:
  """Whether `name` (a str or path) is read as a Hub repo id rather than a local path."""
  if not isinstance(name, str):
    return False  # a pathlib.Path is a path
  if os.path.isdir(os.path.expanduser(name)) or name.startswith((".", "/", "~")) or name.endswith("/"):
    return False
  repo_id, revision = _split(name)
  if revision == "" or "\\" in name or repo_id.count("/") > 1 or not REPO_ID.match(repo_id):
    return False
  if "--" in repo_id or ".." in repo_id or repo_id.endswith(".git") or len(repo_id) > 96:
    return False
  return "/" not in repo_id or not os.path.isdir(repo_id.split("/")[0])


def resolve(name_or_path) -> str:
  """A local model directory for `name_or_path`: an existing directory as is (with ~ expanded),
  a repo id (optionally ID@REVISION) as its snapshot directory, downloaded unless cached, an
  object-store URI (gs://) as its local copy (storage.local_copy).
  Raises HubError, one line: no such directory, repo or revision not found, offline and not in
  the cache, no network."""
  name = os.fspath(name_or_path)
  if storage.is_remote(name):  # gs://...: a local mirror, as for a Hub snapshot
    return storage.local_copy(name)
  if not is_repo_id(name):
    path = os.path.expanduser(name)
    if not os.path.isdir(path):
      raise HubError(f"{name}: no such directory")
    return path
  import huggingface_hub.constants
  return _resolve_repo(name, huggingface_hub.constants.HF_HUB_CACHE, _is_offline())


def _is_offline() -> bool:
  import huggingface_hub.constants
  return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=64)  # one look-up per name per process: callers resolve the same name often
def _resolve_repo(name: str, cache_dir: str, offline: bool) -> str:
  import huggingface_hub
  from huggingface_hub import errors as hub_errors
  repo_id, revision = _split(name)
  patterns = list(MODULE_FILES) + [p for group in WEIGHT_FORMATS for p in group]
  try:
    if not offline:
      try:
        # model_info, not list_repo_files: one request, no retries with back-off when the Hub is unreachable.
        info = huggingface_hub.HfApi().model_info(repo_id, revision=revision)
        patterns = wanted_files([s.rfilename for s in info.siblings or ()])
      except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError):
        raise
      except Exception as e:  # pylint: disable=broad-except
        # No network, Hub down: snapshot_download below falls back to the cache or says why not.
        log.debug("%s: cannot list the repo's files (%s)", name, e)
    try:
      path = huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                               allow_patterns=patterns, local_files_only=offline)
    except getattr(hub_errors, "IncompleteSnapshotError", ()) as e:
      # Offline, the cached snapshot lacks a file the patterns name (often the weights formats
      # we did not download); what it has is checked when the model is read.
      path = e.snapshot_path
  except hub_errors.GatedRepoError as e:
    raise HubError(f"{name}: gated repo on the Hugging Face Hub; accept its terms there and log in "
                   "(hf auth login)") from e
  except hub_errors.RepositoryNotFoundError as e:
    raise HubError(f"{name}: no such directory, and repo not found on the Hugging Face Hub (a private repo "
                   "needs hf auth login)") from e
  except hub_errors.RevisionNotFoundError as e:
    raise HubError(f"{name}: revision {revision!r} not found on the Hugging Face Hub") from e
  except hub_errors.LocalEntryNotFoundError as e:
    if offline:
      raise HubError(f"{name}: no such directory, and offline and not in the cache (HF_HUB_OFFLINE=1, "
                     f"cache {cache_dir})") from e
    raise HubError(f"{name}: no such directory, and no network: the Hugging Face Hub cannot be reached and "
                   f"the repo is not in the cache ({cache_dir})") from e
  except OSError as e:  # an HTTP error of the Hub, a full disk
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise HubError(f"{name}: download failed: {reason}") from e
  log.info("%s -> %s", name, path)
  return str(path)


def wanted_files(repo_files) -> list[str]:
  """The files of a repo a model directory needs: MODULE_FILES and the first weights format of
  WEIGHT_FORMATS the repo has."""
  def matching(patterns):
    return [f for f in repo_files if any(fnmatch.fnmatchcase(f, p) for p in patterns)]
  weights = next((found for group in WEIGHT_FORMATS if (found := matching(group))), [])
  return matching(MODULE_FILES) + weights
