"""Config files and `--config.SECTION.FIELD=VALUE` overrides, with one-line errors.

A config file is a Python file with `get_config()` (or `get_config(arg)`, named as
`configs/x.py:arg`) returning an `ml_collections.ConfigDict`, as in the Flax examples. Overrides
take the type of the field they replace: "true"/"false" for booleans, Python literals for
tuples and dicts (`--config.data.sources="('text:a.txt',)"`), plain text for strings.
"""
from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import ml_collections

from distilbert_jax import errors, storage


def load(spec: str) -> ml_collections.ConfigDict:
  """`path/to/config.py` or `path/to/config.py:arg` -> the ConfigDict its get_config returns."""
  path, _, arg = spec.partition(":")
  file = Path(path)
  if not file.is_file():
    raise errors.ConfigError(f"{path}: no such config file")
  # Configs import their siblings (`from configs import distilbert_base`), as the Flax examples
  # do: the directory that holds configs/ must be importable, wherever the command runs from.
  root = str(file.absolute().parent.parent)
  if root not in sys.path:
    sys.path.insert(0, root)
  module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:
    raise errors.ConfigError(f"{path}: cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
  if not hasattr(module, "get_config"):
    raise errors.ConfigError(f"{path}: defines no get_config()")
  config = module.get_config(arg) if arg else module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise errors.ConfigError(f"{path}: get_config() returned {type(config).__name__}, not a ConfigDict")
  return config


# The config fields that name files or directories (those a config lacks are skipped), and the
# one that holds data source specs. "embedded" names the generated corpus, not a file.
PATH_FIELDS = ("model.path", "teacher.path", "data.dir", "data.tfds_data_dir", "data.train", "data.eval",
               "data.test", "data.tokenizer_dir", "data.cache_dir", "mask.token_counts", "eval_heldout",
               "augment.mlm_path")
SOURCES_FIELD = "data.sources"
NOT_A_PATH = ("", "embedded")
# The path fields that may name a Hugging Face Hub repo id (`org/name`, `org/name@revision`).
MODEL_FIELDS = ("model.path", "teacher.path", "data.tokenizer_dir", "augment.mlm_path")
# The path fields kept as object-store URIs (gs://): an output, and TFDS, which reads buckets
# itself. Remote files and directories in the other fields are read from local copies.
REMOTE_AS_IS = ("data.cache_dir", "data.tfds_data_dir")


def resolve_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose path fields are absolute, relative ones taken from the current
  directory: resolved once, where the config enters, so that nothing later depends on the
  working directory (orbax, for one, refuses relative checkpoint paths). A Hub repo id in a
  MODEL_FIELDS field becomes its snapshot directory (downloaded unless cached; a bad id is a
  ConfigError), and a gs:// input its local copy (storage.local_copy), so that the rest of the
  code sees local directories only."""
  from distilbert_jax.convert import hub
  from distilbert_jax.data import token_cache
  config = copy.deepcopy(config)

  def field(name):
    node, parts = config, name.split(".")
    for part in parts[:-1]:
      node = node.get(part)
      if not isinstance(node, ml_collections.ConfigDict):
        return None, None
    return (node, parts[-1]) if parts[-1] in node else (None, None)

  for name in PATH_FIELDS:
    node, key = field(name)
    if node is None or not isinstance(node[key], str) or node[key] in NOT_A_PATH:
      continue
    if storage.is_remote(node[key]):
      if name not in REMOTE_AS_IS:
        node[key] = storage.local_copy(node[key])
    elif name in MODEL_FIELDS and hub.is_repo_id(node[key]):
      try:
        node[key] = hub.resolve(node[key])
      except hub.HubError as e:
        raise errors.ConfigError(f"{e} ({name})") from e
    else:
      node[key] = os.path.abspath(os.path.expanduser(node[key]))
  node, key = field(SOURCES_FIELD)
  if node is not None and isinstance(node[key], (tuple, list)):
    node[key] = tuple(s if s in NOT_A_PATH else token_cache.absolute_source(s) for s in node[key])
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]) -> None:
  """Sets each (dotted field, text value) in place; unknown fields and values of the wrong
  type raise ConfigError naming the field (with the closest existing name)."""
  for name, text in overrides:
    node, parts = config, name.split(".")
    for depth, part in enumerate(parts):
      where = ".".join(parts[:depth])
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f"; did you mean --config.{_suggest(config, parts, depth, close[0])}?" if close else ""
        inside = f" in config.{where}" if where else ""
        raise errors.ConfigError(f"--config.{name}: unknown field {part!r}{inside}{hint}")
      if depth < len(parts) - 1:
        node = node[part]
    field = parts[-1]
    value = parse_value(name, text, node[field])
    try:
      node[field] = value
    except (TypeError, ValueError) as e:
      raise errors.ConfigError(f"--config.{name}={text}: {str(e).splitlines()[0]}") from e


def _suggest(config, parts: list[str], depth: int, replacement: str) -> str:
  """The dotted name with parts[depth] replaced, kept whole where the rest then exists."""
  fixed = parts[:depth] + [replacement] + parts[depth + 1:]
  node = config
  for part in fixed:
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return ".".join(parts[:depth] + [replacement])
    node = node[part]
  return ".".join(fixed)


def parse_value(name: str, text: str, current: Any) -> Any:
  """`text` as a value of the type of `current`."""
  def fail(kind):
    return errors.ConfigError(f"--config.{name}={text}: expected {kind}")
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise fail("true or false")
  if isinstance(current, int):
    try:
      return int(text.replace("_", ""))
    except ValueError:
      raise fail("an integer") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise fail("a number") from None
  if isinstance(current, str):
    return text
  literal = _literal(text)
  if isinstance(current, (tuple, list)):
    if isinstance(literal, (tuple, list)):
      return tuple(literal)
    if text == "":
      return ()
    raise fail("a tuple such as \"('a', 'b')\"")
  if isinstance(current, (dict, ml_collections.ConfigDict)):
    if isinstance(literal, dict):
      return ml_collections.ConfigDict(literal)
    raise fail("a dict such as \"{'dropout': 0.0}\"")
  return text if literal is _NOT_A_LITERAL else literal  # a field that is None: any value


_NOT_A_LITERAL = object()


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return _NOT_A_LITERAL


def split_overrides(args: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
  """(["--config.a.b=1", "--config.c", "2", "x"]) -> ([("a.b", "1"), ("c", "2")], ["x"])."""
  overrides, rest, i = [], [], 0
  while i < len(args):
    arg = args[i]
    if arg.startswith("--config."):
      name, eq, value = arg[len("--config."):].partition("=")
      if not eq:
        if i + 1 >= len(args):
          raise errors.ConfigError(f"{arg}: needs a value ({arg}=VALUE)")
        i, value = i + 1, args[i + 1]
      overrides.append((name, value))
    else:
      rest.append(arg)
    i += 1
  return overrides, rest
