"""Hugging Face PyTorch checkpoints <-> our parameter trees: state dicts by name, the weight files
of a Hugging Face directory, and writing one (save_pretrained).

Directories read: config.json plus model.safetensors, pytorch_model.bin (read with
torch.load(weights_only=True)), a sharded checkpoint with its *.index.json, or a legacy
flax_model.msgpack. Writing follows transformers v5: tied weights (the MLM decoder) are left out,
DistilBERT's sinusoidal position table is written (transformers keeps it as a frozen parameter).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from distilbert_jax.convert.directories import (_atomic_directory, _copy_sentence_transformers, _copy_tokenizer,
                                                _head_of, _hf_config_dict)
from distilbert_jax.convert.layout import _checked, _expected_shapes, _fresh_params, _to_layout, unstack_layers
from distilbert_jax.convert.names import (BASE_PREFIX, BODY_SCOPES, HEAD_SCOPES, ConversionError, _hf_name,
                                          _one_line)
from distilbert_jax.models import layers as model_layers

log = logging.getLogger(__name__)


SINUSOIDAL_TOLERANCE = 1e-6


def flax_tree_to_state_dict(tree) -> dict[str, np.ndarray]:
  """A Flax tree in our (or HF's former Flax) layout -> PyTorch names, kernels transposed."""
  flat = traverse_util.flatten_dict(unstack_layers(tree))
  out = {}
  for path, value in flat.items():
    name, transpose = _hf_name(path)
    value = np.asarray(value)
    out[name] = np.ascontiguousarray(value.T) if transpose else value
  return out


def params_to_state_dict(params, config, head: str) -> dict[str, np.ndarray]:
  """Our parameters (either layout) -> a Hugging Face PyTorch state dict, named as transformers'
  class for `head` names it (prefix `bert.`/`distilbert.` for heads, none for the base model).
  Tied weights are left out, as transformers v5 saves them."""
  flat = _checked(params, config, head)
  state_dict = flax_tree_to_state_dict(unstack_layers(traverse_util.unflatten_dict(flat), config))
  prefix = BASE_PREFIX[config.model_type] if head != "base" else ""
  if config.model_type == "distilbert" and config.sinusoidal_pos_embds:
    state_dict[prefix + "embeddings.position_embeddings.weight"] = model_layers.sinusoidal_position_table(
        config.max_position_embeddings, config.dim)
  if config.model_type == "bert" and head in ("masked_lm", "pretraining") and not config.tie_word_embeddings:
    # Untied, transformers' forward uses the decoder's own bias; it keeps `cls.predictions.bias` too.
    state_dict["cls.predictions.decoder.bias"] = state_dict["cls.predictions.bias"]
  return state_dict


def _normalise_names(state_dict: dict, config, head: str) -> dict:
  """Old LayerNorm names gamma/beta -> weight/bias; add or strip the base model prefix so that
  names read as transformers' class for `head` names them."""
  prefix, scopes = BASE_PREFIX[config.model_type], BODY_SCOPES[config.model_type]
  out = {}
  for name, value in state_dict.items():
    if name.endswith((".gamma", ".beta")):
      name = name.rsplit(".", 1)[0] + (".weight" if name.endswith(".gamma") else ".bias")
    body = name[len(prefix):] if name.startswith(prefix) else name if name.split(".")[0] in scopes else None
    if body is not None:
      name = body if head == "base" else prefix + body
    out[name] = value
  return out


def _is_head_param(config, head: str, name: str) -> bool:
  """Parameters outside the embeddings and layers (pooler, heads) may be newly initialised."""
  body = name[len(BASE_PREFIX[config.model_type]):] if head != "base" else name
  return body.split(".")[0] not in ("embeddings", "encoder", "transformer")


def _droppable(config, head: str, name: str) -> bool:
  """The pooler and other heads' weights, which a head without them ignores (as transformers does)."""
  prefix = BASE_PREFIX[config.model_type] if head != "base" else ""
  return name.startswith(prefix + "pooler.") or name.split(".")[0] in HEAD_SCOPES[config.model_type]


def state_dict_to_params(state_dict: dict, config, head: str, *, init_missing_heads: bool = False,
                         rng: Optional[jax.Array] = None, param_dtype=jnp.float32, source: str = "state dict"):
  """A Hugging Face PyTorch state dict (numpy arrays) -> our parameters (numpy, the layout that
  config.scan_layers names). Missing pooler/head parameters are newly initialised only with
  init_missing_heads=True; the pooler and other heads' weights that `head` lacks are dropped, as
  transformers does; anything else missing or unexpected is a ConversionError."""
  expected = _expected_shapes(config, head, param_dtype)
  sd = _normalise_names(state_dict, config, head)
  prefix = BASE_PREFIX[config.model_type] if head != "base" else ""
  word_name = prefix + "embeddings.word_embeddings.weight"
  ignored = {k for k in sd if k.endswith(("position_ids", "token_type_ids"))}  # index buffers, not weights
  # Tied copies and constants: checked against what they must equal, then dropped.
  copies = {}
  if config.tie_word_embeddings:
    copies = {"cls.predictions.decoder.weight": word_name, "vocab_projector.weight": word_name,
              "cls.predictions.decoder.bias": "cls.predictions.bias"}
  for copy, original in copies.items():
    if copy in sd and original not in sd:  # only the copy stored: tie the other way, as transformers does
      sd[original] = sd[copy]
    if copy in sd:
      if not np.array_equal(np.asarray(sd[copy]), np.asarray(sd[original])):
        raise ConversionError(f"{source}: {copy} differs from {original} though tie_word_embeddings is true; "
                              "set tie_word_embeddings=false in config.json")
      ignored.add(copy)
  position_name = prefix + "embeddings.position_embeddings.weight"
  if config.model_type == "distilbert" and config.sinusoidal_pos_embds and position_name in sd:
    table = model_layers.sinusoidal_position_table(config.max_position_embeddings, config.dim)
    stored = np.asarray(sd[position_name], np.float32)
    if stored.shape != table.shape or np.abs(stored - table).max() > SINUSOIDAL_TOLERANCE:
      raise ConversionError(f"{source}: {position_name} is not the sinusoidal table of sinusoidal_pos_embds=true "
                            f"(tolerance {SINUSOIDAL_TOLERANCE})")
    ignored.add(position_name)

  flat, missing, bad_shapes, used = {}, [], [], set()
  for path, shape in expected.items():
    name, transpose = _hf_name(path)
    candidates = [name]
    if name == "cls.predictions.bias" and not config.tie_word_embeddings:
      candidates.insert(0, "cls.predictions.decoder.bias")  # what transformers' untied forward uses
    found = next((c for c in candidates if c in sd), None)
    if found is None:
      missing.append(name)
      continue
    used.update(c for c in candidates if c in sd)
    value = np.asarray(sd[found])
    value = value.T if transpose else value
    if value.shape != shape.shape:
      bad_shapes.append(f"{found} has {tuple(value.shape)}, the model expects {tuple(shape.shape)}")
      continue
    flat[path] = value.astype(shape.dtype)
  unused = set(sd) - used - ignored
  unexpected = sorted(k for k in unused if not _droppable(config, head, k))
  dropped = sorted(k for k in unused if _droppable(config, head, k))
  if [k for k in dropped if ".pooler." not in "." + k]:
    log.warning("%s: weights unused by the %s head dropped: %s", source, head, dropped)
  initialisable = [n for n in missing if _is_head_param(config, head, n)]
  if init_missing_heads and missing and len(initialisable) == len(missing):
    log.warning("%s: newly initialised (train them before use): %s", source, missing)
    fresh = _fresh_params(config, head, param_dtype, rng)
    flat.update({p: fresh[p] for p in expected if _hf_name(p)[0] in missing})
    missing = []
  if missing or unexpected:
    hint = (" (pass init_missing_heads=True to initialise a new head)"
            if missing and len(initialisable) == len(missing) and not init_missing_heads else "")
    raise ConversionError(f"{source}: missing keys {sorted(missing)}; unexpected keys {unexpected}{hint}")
  if bad_shapes:
    raise ConversionError(f"{source}: shape mismatch: {'; '.join(bad_shapes)}")
  return _to_layout(traverse_util.unflatten_dict(flat), config)


def _read_weight_file(path: Path) -> dict[str, np.ndarray]:
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file
    read = lambda: load_file(str(path))
  elif path.suffix == ".msgpack":
    from flax import serialization
    read = lambda: serialization.msgpack_restore(path.read_bytes())
  else:
    import torch  # only PyTorch's own format needs it
    read = lambda: torch.load(str(path), weights_only=True, map_location="cpu")
  # Only the reader is inside: what our own code raises afterwards is no broken file.
  try:
    stored = read()
  except Exception as e:  # safetensors, pickle, torch and msgpack each raise their own types
    raise ConversionError(f"{path}: corrupt or truncated weights file ({_one_line(e)})") from e
  if path.suffix == ".safetensors":
    return stored
  if path.suffix == ".msgpack":
    return flax_tree_to_state_dict(stored)
  return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in stored.items()}


def read_hf_state_dict(directory) -> dict[str, np.ndarray]:
  """The state dict of a Hugging Face directory, from the first format found (safetensors, sharded
  safetensors, pytorch_model.bin, sharded .bin, flax_model.msgpack)."""
  directory = Path(directory)
  for single, index in (("model.safetensors", "model.safetensors.index.json"),
                        ("pytorch_model.bin", "pytorch_model.bin.index.json"), ("flax_model.msgpack", None)):
    if (directory / single).is_file():
      return _read_weight_file(directory / single)
    if index and (directory / index).is_file():
      try:
        weight_map = json.loads((directory / index).read_text())["weight_map"]
      except (ValueError, KeyError) as e:
        raise ConversionError(f"{directory / index}: unreadable index ({_one_line(e)})") from e
      state_dict = {}
      for shard in sorted(set(weight_map.values())):
        if not (directory / shard).is_file():
          raise ConversionError(f"{directory / index}: shard file {shard} is missing")
        state_dict.update(_read_weight_file(directory / shard))
      return state_dict
  raise ConversionError(f"{directory}: no weights file (model.safetensors, pytorch_model.bin, "
                        "their sharded *.index.json, or flax_model.msgpack)")


def save_pretrained(model, params, out_dir, tokenizer_dir=None, *, overwrite: bool = False,
                    sentence_transformers_source=None) -> None:
  """A Hugging Face PyTorch directory: config.json, model.safetensors, tokenizer files (from
  tokenizer_dir, else from the directory the model was loaded from), and the sentence-transformers
  files (modules.json, 1_Pooling/, ...) of sentence_transformers_source, else of the directory the
  model was loaded from, when that has them (a distilled student passes its teacher's)."""
  from safetensors.numpy import save_file
  head = _head_of(model)
  state_dict = params_to_state_dict(params, model.config, head)
  with _atomic_directory(out_dir, overwrite) as tmp:
    (tmp / "config.json").write_text(json.dumps(_hf_config_dict(model.config, head, False), indent=2) + "\n")
    save_file(state_dict, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    _copy_tokenizer(model, tokenizer_dir, tmp)
    _copy_sentence_transformers(model, sentence_transformers_source, tmp)
