"""What both kinds of model directory share: reading config.json, the tokenizer and
sentence-transformers files, and writing a directory atomically.

Every directory is written into a temporary sibling and renamed into place, so a failure never
leaves a half-written output; an existing output that is not an empty directory is an error
unless overwrite=True.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from pathlib import Path

from distilbert_jax import atomic, models, storage
from distilbert_jax.convert import hub
from distilbert_jax.convert.hub import TOKENIZER_FILES
from distilbert_jax.convert.names import ConversionError, architecture_name
from distilbert_jax.convert.sentence_transformers import copy_sentence_transformers_files
from distilbert_jax.models import layers as model_layers


SOURCE_ATTR = "_distilbert_jax_source_dir"  # set on loaded models: where their tokenizer files are


def _read_config(directory: Path, **overrides) -> tuple[dict, models.ModelConfig]:
  """(config.json's dict, our config with `overrides` applied; num_labels=N names N labels)."""
  config_file = Path(directory) / "config.json"
  if not Path(directory).is_dir():
    raise ConversionError(f"{directory}: no such directory")
  if not config_file.is_file():
    raise ConversionError(f"{config_file}: missing config file")
  if "num_labels" in overrides:
    overrides["id2label"] = tuple(f"LABEL_{i}" for i in range(overrides.pop("num_labels")))
  try:
    d = json.loads(config_file.read_text())
    return d, dataclasses.replace(models.config_from_hf_dict(d), **overrides)
  except (ValueError, TypeError) as e:  # bad JSON, unknown model_type, unknown field
    raise ConversionError(f"{config_file}: {str(e).splitlines()[0]}") from e


def read_model_config(path, **config_overrides) -> models.ModelConfig:
  """Our config of a model directory (Hugging Face or ours) or Hub repo id from its config.json
  alone (no weights are read); config_overrides as load_pretrained's."""
  return _read_config(Path(hub.resolve(path)), **config_overrides)[1]


def _head_of(model) -> str:
  heads = models.HEADS_BY_TYPE[model.config.model_type]
  return next(h for h, cls in heads.items() if type(model) is cls)


def _check_output(out_dir: Path, overwrite: bool, remedy: str) -> None:
  """An existing output that is not an empty directory needs overwrite."""
  empty_dir = out_dir.is_dir() and not any(out_dir.iterdir())
  if out_dir.exists() and not (overwrite or empty_dir):
    raise ConversionError(f"{out_dir}: output directory exists and is not empty; {remedy}")


@contextlib.contextmanager
def _atomic_directory(out_dir, overwrite: bool):
  """Yields a temporary sibling of out_dir to fill; renames it into place only on success. An
  existing empty directory is filled (replaced by the full one), as transformers' save_pretrained
  does; anything else already there needs overwrite=True."""
  out_dir = storage.path(out_dir)  # gs:// too: atomic.directory publishes it there
  _check_output(out_dir, overwrite, "pass overwrite=True to replace it")
  with atomic.directory(out_dir, replace=True) as tmp:
    yield tmp


def _copy_tokenizer(model, tokenizer_dir, out: Path) -> None:
  source = tokenizer_dir or getattr(model, SOURCE_ATTR, None)
  if source is None:
    return
  for name in TOKENIZER_FILES:
    if (Path(source) / name).is_file():
      shutil.copy2(Path(source) / name, out / name)


def _copy_sentence_transformers(model, source, out: Path) -> None:
  """modules.json and the pooling files of `source` (else of the directory the model was loaded
  from), if it has them, so that SentenceTransformer(out) pools as the source did."""
  source = source or getattr(model, SOURCE_ATTR, None)
  if source is not None:
    copy_sentence_transformers_files(source, out, model.config.hidden_size)


def _hf_config_dict(config, head: str, include_compile_fields: bool) -> dict:
  d = model_layers.config_to_hf_dict(config, include_compile_fields=include_compile_fields)
  d["architectures"] = [architecture_name(config, head)]
  if head == "sequence_classification" and config.num_labels == 1:
    # One output is a regression head (STS-B); transformers' pipelines and losses read it here.
    d["problem_type"] = "regression"
  return d
