"""Where runs read and write: local paths and object-store URIs (gs://bucket/path) as one path
type, `etils.epath.Path` (orbax's own), and what object storage lacks next to a file system.

  storage.path("gs://bucket/run") / "metrics.jsonl"   # epath.Path; local paths made absolute
  storage.is_remote(p)                                 # has a scheme: gs://, s3://, ...
  storage.check_writable("gs://bucket/run")            # one-line errors before any work
  storage.local_copy("gs://bucket/model")              # a local mirror, for readers that need files

Object storage has no rename, so a directory cannot appear whole at once. A directory the project
publishes there (atomic.directory) carries IN_PROGRESS_MARKER from before its first object until
after COMPLETE_MARKER, its last; a reader (load_pretrained, resume, the token cache) refuses a
directory whose in-progress marker stands without the completion marker, in one line. A
directory without either marker was copied in by other means (gsutil, a Hub snapshot) and is
taken as it is. Single objects are atomic by themselves: an upload that fails never appears.

File systems list afresh on every call (no cached listings): several hosts write one work
directory. Cloud Storage emulators (tests, local development): with STORAGE_EMULATOR_HOST set, gcsfs and
google-cloud-storage talk to it by themselves; `_configure` points tensorstore (orbax's array
writer) at it too and turns off gcsfs's bucket-type probe, a gRPC call an emulator never answers
(it costs a minute per file system opened), before gcsfs is first imported.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Union

from etils import epath

from distilbert_jax import errors

PathLike = Union[str, os.PathLike]

IN_PROGRESS_MARKER = ".distilbert_jax-in-progress"
COMPLETE_MARKER = ".distilbert_jax-complete"
# Where local mirrors of remote inputs live (local_copy); override with DISTILBERT_JAX_CACHE.
_CACHE_ENV = "DISTILBERT_JAX_CACHE"


class StorageError(errors.Error, OSError):
  """An object-store URI that cannot be used: unreachable, unauthorised, or half written."""


def _configure() -> None:
  import fsspec.config
  # No cached listings: other hosts (and orbax, through tensorstore) write the same prefixes, so
  # a listing this process cached may be stale by the next call.
  fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)
  emulator = os.environ.get("STORAGE_EMULATOR_HOST")
  if emulator:
    if not emulator.startswith(("http://", "https://")):
      emulator = "http://" + emulator
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", emulator)
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")  # tensorstore sends it; emulators ignore it


def is_remote(p: PathLike) -> bool:
  """Whether `p` names an object store (a URI with a scheme) rather than a local path."""
  return "://" in os.fspath(p) if isinstance(p, (str, os.PathLike)) else False


def path(p: PathLike) -> epath.Path:
  """`p` as an epath.Path: a URI as it is, a local path with ~ expanded and made absolute."""
  _configure()
  text = os.fspath(p)
  return epath.Path(text if is_remote(text) else os.path.abspath(os.path.expanduser(text)))


def filesystem(uri: PathLike):
  """(fsspec file system, path inside it) of a URI."""
  _configure()
  import fsspec
  return fsspec.core.url_to_fs(os.fspath(uri))


def _describe(error: BaseException) -> str:
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  return text[:200]


def check_writable(uri: PathLike) -> None:
  """Raises StorageError (one line naming `uri`) unless an object can be written and deleted
  under `uri`: an unreachable endpoint, missing credentials or a permission error are found
  here, before a run loads any model."""
  fs, root = filesystem(uri)
  probe = f"{root.rstrip('/')}/.distilbert_jax-write-probe-{os.getpid()}-{os.urandom(4).hex()}"
  gcsfs_log = logging.getLogger("gcsfs")
  level = gcsfs_log.level
  gcsfs_log.setLevel(logging.CRITICAL)  # its retries log tracebacks; the error below is the one line
  try:
    fs.pipe_file(probe, b"")
    fs.rm_file(probe)
  except PermissionError as e:
    raise StorageError(f"{uri}: no permission to write there ({_describe(e)})") from e
  except FileNotFoundError as e:
    raise StorageError(f"{uri}: no such bucket ({_describe(e)})") from e
  except Exception as e:  # connection refused, DNS, credentials: what gcsfs and google-auth raise
    raise StorageError(f"{uri}: cannot write there: {type(e).__name__}: {_describe(e)}") from e
  finally:
    gcsfs_log.setLevel(level)


def check_complete(directory: PathLike) -> None:
  """Raises StorageError if `directory` is a remote directory whose publication never finished."""
  if not is_remote(directory):
    return
  d = path(directory)
  if (d / IN_PROGRESS_MARKER).exists() and not (d / COMPLETE_MARKER).exists():
    raise StorageError(f"{directory}: incomplete (its writer stopped before {COMPLETE_MARKER} was written); "
                       f"rerun what writes it, or delete it")


def is_complete_directory(directory: PathLike) -> bool:
  """Whether a remote `directory` was published whole (its completion marker is there)."""
  return (path(directory) / COMPLETE_MARKER).exists()


def publish_directory(local_dir: PathLike, uri: PathLike, *, replace: bool) -> bool:
  """Uploads the files of `local_dir` to the remote directory `uri` between the two markers.

  An existing complete `uri` is kept (replace=False; returns False) or replaced: its completion
  marker goes first, so that no reader takes a mix of old and new for complete."""
  fs, root = filesystem(uri)
  root = root.rstrip("/")
  if fs.exists(root) and not replace and (fs.exists(f"{root}/{COMPLETE_MARKER}")
                                          or not fs.exists(f"{root}/{IN_PROGRESS_MARKER}")):
    return False
  fs.pipe_file(f"{root}/{IN_PROGRESS_MARKER}", b"")
  if fs.exists(f"{root}/{COMPLETE_MARKER}"):
    fs.rm_file(f"{root}/{COMPLETE_MARKER}")
  old = [p for p in fs.find(root) if p.rsplit("/", 1)[-1] != IN_PROGRESS_MARKER]
  if old:
    fs.rm(old)
  listing = []
  for dirpath, _, names in os.walk(local_dir):
    for name in sorted(names):
      local = os.path.join(dirpath, name)
      relative = os.path.relpath(local, local_dir).replace(os.sep, "/")
      fs.put_file(local, f"{root}/{relative}")
      listing.append([relative, os.path.getsize(local)])
  fs.pipe_file(f"{root}/{COMPLETE_MARKER}", json.dumps({"files": sorted(listing)}).encode())
  fs.rm_file(f"{root}/{IN_PROGRESS_MARKER}")
  return True


def upload_file(local_file: PathLike, uri: PathLike) -> None:
  """Copies a local file to the object `uri` (an upload appears whole or not at all)."""
  fs, root = filesystem(uri)
  fs.put_file(os.fspath(local_file), root)


def cache_root() -> str:
  return os.environ.get(_CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "distilbert_jax")


def local_copy(uri: PathLike) -> str:
  """A local copy of the remote file or directory `uri`, for readers that need local files
  (tokenizers, safetensors, memory maps). Mirrors live under cache_root()/storage, named by the
  URI and a fingerprint of the objects' names, sizes and generations, so a changed remote makes
  a new copy and an unchanged one is downloaded once. Local paths are returned as they are."""
  if not is_remote(uri):
    return os.fspath(uri)
  check_complete(uri)
  fs, root = filesystem(uri)
  root = root.rstrip("/")
  try:
    is_file = fs.isfile(root)
    entries = {root: fs.info(root)} if is_file else fs.find(root, detail=True)
  except Exception as e:
    raise StorageError(f"{uri}: cannot be read: {type(e).__name__}: {_describe(e)}") from e
  if not entries:
    raise StorageError(f"{uri}: no such file or directory")
  fingerprint = hashlib.sha256(json.dumps(sorted(
      (name, info.get("size"), str(info.get("generation") or info.get("etag") or info.get("mtime")))
      for name, info in entries.items()), default=str).encode()).hexdigest()[:16]
  name = root.rsplit("/", 1)[-1]
  parent = os.path.join(cache_root(), "storage", hashlib.sha256(os.fspath(uri).encode()).hexdigest()[:16],
                        fingerprint)
  target = os.path.join(parent, name)
  if os.path.exists(os.path.join(parent, ".done")):
    return target
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".download-", dir=parent)
  try:
    for remote in entries:
      relative = "" if is_file else remote[len(root) + 1:]
      local = os.path.join(staging, name, *relative.split("/")) if relative else os.path.join(staging, name)
      os.makedirs(os.path.dirname(local), exist_ok=True)
      fs.get_file(remote, local)
    if not os.path.exists(target):
      os.replace(os.path.join(staging, name), target)
    open(os.path.join(parent, ".done"), "w").close()
  except Exception as e:
    raise StorageError(f"{uri}: cannot be downloaded: {type(e).__name__}: {_describe(e)}") from e
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return target


def move(source: PathLike, target: PathLike) -> None:
  """Moves a file or directory (on object storage: copies, then deletes the source)."""
  if is_remote(source):
    fs, src = filesystem(source)
    _, dst = filesystem(target)
    fs.mv(src, dst, recursive=True)
  else:
    shutil.move(os.fspath(source), os.fspath(target))
