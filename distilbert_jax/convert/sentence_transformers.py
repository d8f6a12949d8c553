"""The sentence-transformers layout of a model directory: the pooling (and normalisation) that its
modules.json names, and carrying those files into an export.

    modules.json                       the pipeline, in order: Transformer (path ""), Pooling, Normalize
    1_Pooling/config.json              pooling_mode ("mean", "cls", "max", or a list of them,
                                       concatenated), or the older booleans pooling_mode_cls_token,
                                       pooling_mode_mean_tokens, ...; word_embedding_dimension
                                       (embedding_dimension in newer files)
    2_Normalize/                       may be absent: Normalize has no parameters
    sentence_bert_config.json          max_seq_length, do_lower_case
    config_sentence_transformers.json  versions, prompts, similarity function

A directory without modules.json is a plain transformers model, which sentence-transformers mean
pools without normalising; read_sentence_pooling says the same.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Optional

from distilbert_jax.convert.names import ConversionError, _one_line

MODULES_FILE = "modules.json"
CONFIG_FILES = ("sentence_bert_config.json", "config_sentence_transformers.json")
SUPPORTED_MODES = ("mean", "cls", "max")
# The older boolean keys, in the order sentence-transformers concatenates their outputs.
LEGACY_MODE_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                    "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
DIMENSION_KEYS = ("word_embedding_dimension", "embedding_dimension")


@dataclasses.dataclass(frozen=True)
class SentencePooling:
  """How token states [batch, length, hidden] become one sentence embedding."""
  modes: tuple[str, ...] = ("mean",)  # each of SUPPORTED_MODES; several are concatenated in this order
  normalize: bool = False  # L2-normalise the pooled embedding (a Normalize module)
  dimension: Optional[int] = None  # the hidden size the pooling config names
  max_seq_length: Optional[int] = None  # sentence_bert_config.json's, if any

  def describe(self) -> str:
    return "+".join(self.modes) + " pooling" + (", normalised" if self.normalize else "")


def _read_json(path: Path):
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise ConversionError(f"{path}: unreadable JSON ({_one_line(e)})") from e


def _module_kind(entry: dict) -> str:
  """`sentence_transformers.models.Pooling` (and newer module paths) -> `Pooling`."""
  return str(entry.get("type", "")).rsplit(".", 1)[-1]


def read_modules(directory) -> Optional[list[dict]]:
  """modules.json of `directory` as a list of {"type", "path", ...}, or None without one; paths
  must stay inside the directory."""
  path = Path(directory) / MODULES_FILE
  if not path.is_file():
    return None
  modules = _read_json(path)
  if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
    raise ConversionError(f"{path}: expected a list of modules, each with a 'type'")
  for m in modules:
    sub = str(m.get("path", ""))
    if Path(sub).is_absolute() or ".." in Path(sub).parts:
      raise ConversionError(f"{path}: module path {sub!r} leaves the model directory")
  return modules


def _pooling_modes(config: dict, source: Path) -> tuple[str, ...]:
  if "pooling_mode" in config:
    mode = config["pooling_mode"]
    modes = (mode,) if isinstance(mode, str) else tuple(mode) if isinstance(mode, list) else ()
  else:
    modes = tuple(mode for key, mode in LEGACY_MODE_KEYS.items() if config.get(key)) or ("mean",)
  if not modes:
    raise ConversionError(f"{source}: pooling_mode must be a name or a list of names, got {config['pooling_mode']!r}")
  unsupported = [m for m in modes if m not in SUPPORTED_MODES]
  if unsupported:
    raise ConversionError(f"{source}: pooling mode(s) {', '.join(map(str, unsupported))} not supported "
                          f"(supported: {', '.join(SUPPORTED_MODES)})")
  return modes


def read_sentence_pooling(directory) -> SentencePooling:
  """The pooling that `directory`'s modules.json names (mean pooling without one). Modules other
  than Transformer, Pooling and Normalize, or a pooling mode other than SUPPORTED_MODES, are
  a ConversionError naming the file: embeddings that silently differ would be worse."""
  directory = Path(directory)
  modules = read_modules(directory)
  if modules is None:
    return SentencePooling()
  modules_file = directory / MODULES_FILE
  kinds = [_module_kind(m) for m in modules]
  unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
  if unsupported:
    raise ConversionError(f"{modules_file}: module(s) {', '.join(unsupported)} not supported "
                          "(supported: Transformer, Pooling, Normalize)")
  if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
    raise ConversionError(f"{modules_file}: expected Transformer, Pooling, then optionally Normalize; "
                          f"found {', '.join(kinds)}")
  if str(modules[0].get("path", "")) not in ("", "."):
    raise ConversionError(f"{modules_file}: the Transformer lives in {modules[0]['path']!r}; expected the model "
                          "directory itself (path \"\")")
  pooling_file = directory / str(modules[1].get("path", "")) / "config.json"
  if not pooling_file.is_file():
    raise ConversionError(f"{pooling_file}: missing pooling config (named by {modules_file})")
  config = _read_json(pooling_file)
  if not isinstance(config, dict):
    raise ConversionError(f"{pooling_file}: expected a JSON object")
  dimension = next((config[k] for k in DIMENSION_KEYS if k in config), None)
  max_seq_length = None
  if (directory / CONFIG_FILES[0]).is_file():
    bert_config = _read_json(directory / CONFIG_FILES[0])
    if not isinstance(bert_config, dict):
      raise ConversionError(f"{directory / CONFIG_FILES[0]}: expected a JSON object")
    max_seq_length = bert_config.get("max_seq_length")
  return SentencePooling(modes=_pooling_modes(config, pooling_file), normalize=len(kinds) > 2,
                         dimension=None if dimension is None else int(dimension),
                         max_seq_length=None if max_seq_length is None else int(max_seq_length))


def copy_sentence_transformers_files(source, out, hidden_size: int) -> bool:
  """Copies modules.json, the directories it names, sentence_bert_config.json and
  config_sentence_transformers.json from `source` into `out`, with the pooling's dimension set to
  `hidden_size` (a student narrower than its teacher). Returns whether `source` had modules.json."""
  source, out = Path(source), Path(out)
  modules = read_modules(source)
  if modules is None:
    return False
  shutil.copy2(source / MODULES_FILE, out / MODULES_FILE)
  for name in CONFIG_FILES:
    if (source / name).is_file():
      shutil.copy2(source / name, out / name)
  for module in modules:
    sub = str(module.get("path", ""))
    if sub in ("", ".") or not (source / sub).is_dir():  # the model itself; a Normalize without files
      continue
    shutil.copytree(source / sub, out / sub, dirs_exist_ok=True)
    pooling_file = source / sub / "config.json"
    if _module_kind(module) == "Pooling" and pooling_file.is_file():
      config = _read_json(pooling_file)
      if not isinstance(config, dict):
        raise ConversionError(f"{pooling_file}: expected a JSON object")
      key = next((k for k in DIMENSION_KEYS if k in config), DIMENSION_KEYS[0])
      config[key] = int(hidden_size)
      (out / sub / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
  return True
