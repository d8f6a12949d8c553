"""The one converter between Hugging Face checkpoints and our Flax parameters.

    model, params = convert.load_pretrained(path, head="masked_lm")   # HF dir or our Flax dir
    convert.save_pretrained(model, params, out_dir)   # HF PyTorch dir: config.json + model.safetensors
    convert.save_flax(model, params, out_dir)         # our Flax dir

Our parameter paths are those of Hugging Face's former Flax classes (`bert/encoder/layer/0/...`),
so a PyTorch name is the path joined with dots, with the leaf renamed (kernel -> weight,
transposed; embedding -> weight; LayerNorm scale -> weight). As nanoGPT's from_pretrained does,
the expected tree comes from `jax.eval_shape(model.init)` and every key and shape is checked;
all missing and unexpected keys are reported together, in one line.

Hugging Face directories read: config.json plus model.safetensors, pytorch_model.bin (read with
torch.load(weights_only=True)), a sharded checkpoint with its *.index.json, or a legacy
flax_model.msgpack. Writing follows transformers v5: tied weights (the MLM decoder) are left out,
DistilBERT's sinusoidal position table is written (transformers keeps it as a frozen parameter).

Our Flax directory:
    config.json   the Hugging Face config dict, plus our compile fields (scan_layers,
                  remat_policy, attention_impl), "architectures" and "distilbert_jax_head"
    params/       the parameter tree as numpy arrays, saved by orbax (PyTreeCheckpointer), in the
                  layout that config.json's scan_layers names (scanned: layers stacked on a leading axis)
    tokenizer files copied from the source directory (vocab.txt, tokenizer.json, ...)

Every directory is written into a temporary sibling and renamed into place, so a failure never
leaves a half-written output; an existing output that is not an empty directory is an error
unless overwrite=True.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import flax
from flax import traverse_util
from flax.linen import meta

from distilbert_jax import atomic, errors, models
from distilbert_jax.models import layers as model_layers

log = logging.getLogger(__name__)


class ConversionError(errors.Error, ValueError):
  """A checkpoint that cannot be read or does not fit the model; the message is one line."""


FLAX_HEAD_KEY = "distilbert_jax_head"
SOURCE_ATTR = "_distilbert_jax_source_dir"  # set on loaded models: where their tokenizer files are
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")
# The scope of the base model under a head (none for the base model itself).
BASE_SCOPE = {"bert": "bert", "distilbert": "distilbert"}
BASE_PREFIX = {t: scope + "." for t, scope in BASE_SCOPE.items()}
# Top-level scopes of the heads' own parameters, next to the base model's.
HEAD_SCOPES = {"bert": ("cls", "classifier", "qa_outputs"),
               "distilbert": ("vocab_transform", "vocab_layer_norm", "vocab_projector", "pre_classifier",
                              "classifier", "qa_outputs")}
BODY_SCOPES = {"bert": ("embeddings", "encoder", "pooler"), "distilbert": ("embeddings", "transformer")}
LAYER_PATH = {"bert": ("encoder", "layer"), "distilbert": ("transformer", "layer")}
CLASS_PREFIX = {"bert": "Bert", "distilbert": "DistilBert"}
CLASS_SUFFIX = {"base": "Model", "masked_lm": "ForMaskedLM", "pretraining": "ForPreTraining",
                "sequence_classification": "ForSequenceClassification", "multiple_choice": "ForMultipleChoice",
                "token_classification": "ForTokenClassification", "question_answering": "ForQuestionAnswering"}
# BERT parameter paths and their DistilBERT names (extract_distilbert.py), matched by prefix.
# In the base model: token types and the pooler have no DistilBERT counterpart.
BERT_TO_DISTILBERT_BODY = {("embeddings", n): ("embeddings", n)
                           for n in ("word_embeddings", "position_embeddings", "LayerNorm")}
# In one layer:
BERT_TO_DISTILBERT_LAYER = {
    ("attention", "self", "query"): ("attention", "q_lin"), ("attention", "self", "key"): ("attention", "k_lin"),
    ("attention", "self", "value"): ("attention", "v_lin"), ("attention", "output", "dense"): ("attention", "out_lin"),
    ("attention", "output", "LayerNorm"): ("sa_layer_norm",), ("intermediate", "dense"): ("ffn", "lin1"),
    ("output", "dense"): ("ffn", "lin2"), ("output", "LayerNorm"): ("output_layer_norm",),
}
# The MLM head (the untied decoder's kernel included):
BERT_TO_DISTILBERT_HEAD = {
    ("cls", "predictions", "transform", "dense"): ("vocab_transform",),
    ("cls", "predictions", "transform", "LayerNorm"): ("vocab_layer_norm",),
    ("cls", "predictions", "decoder"): ("vocab_projector",), ("cls", "predictions", "bias"): ("vocab_projector", "bias"),
}
SINUSOIDAL_TOLERANCE = 1e-6


def architecture_name(config, head: str) -> str:
  """The transformers class name, e.g. BertForMaskedLM."""
  return CLASS_PREFIX[config.model_type] + CLASS_SUFFIX[head]


def head_from_architectures(hf_config: dict, source: str = "config.json") -> str:
  """The head for a Hugging Face config's `architectures`, e.g. BertForMaskedLM -> masked_lm."""
  names = {CLASS_PREFIX[t] + CLASS_SUFFIX[h]: h for t, heads in models.HEADS_BY_TYPE.items() for h in heads}
  for arch in hf_config.get("architectures") or ():
    if arch in names:
      return names[arch]
  raise ConversionError(f"{source}: cannot infer the head from architectures={hf_config.get('architectures')}; "
                        f"pass head= one of {list(CLASS_SUFFIX)}")


# ----------------------------------------------------------------------------- names and layouts

def _hf_name(path: tuple) -> tuple[str, bool]:
  """(PyTorch name, whether the array is transposed) for one of our parameter paths."""
  *scopes, leaf = path
  transpose = leaf == "kernel"
  leaf = {"kernel": "weight", "embedding": "weight", "scale": "weight"}.get(leaf, leaf)
  return ".".join((*scopes, leaf)), transpose


def _dummy_input(head: str):  # multiple choice: [batch, choices, length]
  return jnp.ones((1, 1, 2) if head == "multiple_choice" else (1, 2), jnp.int32)


@functools.lru_cache(maxsize=64)
def _expected_shapes(config, head: str, param_dtype=jnp.float32) -> dict:
  """{path: ShapeDtypeStruct} of every parameter, unscanned layout, with no allocation."""
  config = dataclasses.replace(config, scan_layers=False, remat_policy="none")
  model = models.get_model(config, head, param_dtype=param_dtype)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), _dummy_input(head))
  return traverse_util.flatten_dict(meta.unbox(shapes["params"]))


def _plain(params):
  """Nested plain dicts of arrays: no FrozenDict, no nn.Partitioned boxes."""
  return flax.core.unfreeze(meta.unbox(params))


def _map_layer_dicts(tree, fn):
  if not isinstance(tree, Mapping):
    return tree
  return {k: fn(v) if k == "layer" and isinstance(v, Mapping) else _map_layer_dicts(v, fn) for k, v in tree.items()}


def _is_unrolled(layer_dict: dict) -> bool:
  return all(k.isdigit() for k in layer_dict)


def stack_layers(params, config=None):
  """Unrolled layers (layer/0, layer/1, ...) -> the scanned layout (layer/..., leading `layers`
  axis), wherever a `layer` scope appears; already stacked layers pass through unchanged."""
  def stack(layer_dict):
    if not _is_unrolled(layer_dict):
      return layer_dict
    n = len(layer_dict)
    if config is not None and n != config.num_hidden_layers:
      raise ConversionError(f"{n} layers found, config has {config.num_hidden_layers}")
    xp = lambda xs: np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs)
    return jax.tree.map(lambda *xs: xp(xs), *[layer_dict[str(i)] for i in range(n)])
  return _map_layer_dicts(_plain(params), stack)


def unstack_layers(params, config=None):
  """The scanned layout -> unrolled layers (layer/0, layer/1, ...); unrolled layers pass through."""
  def unstack(layer_dict):
    if _is_unrolled(layer_dict):
      return layer_dict
    n = jax.tree.leaves(layer_dict)[0].shape[0]
    if config is not None and n != config.num_hidden_layers:
      raise ConversionError(f"{n} stacked layers found, config has {config.num_hidden_layers}")
    return {str(i): jax.tree.map(lambda x: x[i], layer_dict) for i in range(n)}
  return _map_layer_dicts(_plain(params), unstack)


def _to_layout(params, config):
  return (stack_layers if config.scan_layers else unstack_layers)(params, config)


def _layout_shapes(config, head: str, scanned: bool, param_dtype=jnp.float32) -> dict:
  """{path: ShapeDtypeStruct} of every parameter, layers stacked on a leading axis if `scanned`."""
  expected = _expected_shapes(config, head, param_dtype)
  if not scanned:
    return expected
  stacked = {}
  for path, shape in expected.items():
    if "layer" in path:
      i = path.index("layer")
      if path[i + 1] != "0":
        continue
      path = path[:i + 1] + path[i + 2:]
      shape = jax.ShapeDtypeStruct((config.num_hidden_layers,) + shape.shape, shape.dtype)
    stacked[path] = shape
  return stacked


def _is_scanned(flat: dict) -> bool:
  """Whether a flat parameter tree has its layers stacked (no layer/<index> scopes)."""
  return not any(p[p.index("layer") + 1].isdigit() for p in flat if "layer" in p[:-1])


def _join(paths) -> list[str]:
  return sorted("/".join(p) for p in paths)


def _compare(flat: dict, expected: dict) -> tuple[list, list, list[str]]:
  """(missing paths, unexpected paths, shape mismatches in words) of `flat` against `expected`."""
  missing = [p for p in expected if p not in flat]
  unexpected = [p for p in flat if p not in expected]
  bad = [f"{'/'.join(p)} has {tuple(np.shape(v))}, the model expects {tuple(expected[p].shape)}"
         for p, v in flat.items() if p in expected and tuple(np.shape(v)) != tuple(expected[p].shape)]
  return missing, unexpected, bad


def _checked(params, config, head: str, source: str = "params") -> dict:
  """The flat tree of `params` (either layout) once every path and shape is the model's; all
  differences are reported together, in one line."""
  flat = traverse_util.flatten_dict(_plain(params))
  missing, unexpected, bad = _compare(flat, _layout_shapes(config, head, _is_scanned(flat)))
  if missing or unexpected:
    raise ConversionError(f"{source}: missing keys {_join(missing)}; unexpected keys {_join(unexpected)}")
  if bad:
    raise ConversionError(f"{source}: shape mismatch: {'; '.join(bad)}")
  return flat


def _is_head_path(config, head: str, path: tuple) -> bool:
  """Outside the embeddings and layers: the pooler and heads, which may be newly initialised."""
  body = path if head == "base" else path[1:] if path[0] == BASE_SCOPE[config.model_type] else ()
  return body[:1] not in (("embeddings",), ("encoder",), ("transformer",))


def _droppable_path(config, head: str, path: tuple) -> bool:
  """The pooler and other heads' parameters, which a head without them ignores."""
  base = () if head == "base" else (BASE_SCOPE[config.model_type],)
  return path[:len(base) + 1] == base + ("pooler",) or path[0] in HEAD_SCOPES[config.model_type]


def _fresh_params(config, head: str, param_dtype, rng: Optional[jax.Array]) -> dict:
  """{path: numpy array} of newly initialised parameters, unscanned layout."""
  model = models.get_model(dataclasses.replace(config, scan_layers=False, remat_policy="none"), head,
                           param_dtype=param_dtype)
  fresh = model.init(rng if rng is not None else jax.random.PRNGKey(0), _dummy_input(head))
  return {p: np.asarray(v) for p, v in traverse_util.flatten_dict(meta.unbox(fresh["params"])).items()}


def _fit_params(flat: dict, config, head: str, *, init_missing_heads: bool, rng: Optional[jax.Array],
                param_dtype, source: str):
  """{path: array}, in the layout config.scan_layers names -> the parameters of `head` (numpy, in
  param_dtype). As state_dict_to_params does by name: the pooler and other heads' parameters that
  `head` lacks are dropped; missing pooler and head parameters are newly initialised only with
  init_missing_heads=True; anything else missing or unexpected is a ConversionError."""
  expected = _layout_shapes(config, head, config.scan_layers, param_dtype)
  missing, unused, bad = _compare(flat, expected)
  unexpected = [p for p in unused if not _droppable_path(config, head, p)]
  dropped = [p for p in unused if _droppable_path(config, head, p) and "pooler" not in p]
  # Warnings name parameters as Hugging Face does, as state_dict_to_params' warnings do.
  hf_names = lambda paths: sorted(_hf_name(p)[0] for p in paths)
  if dropped:
    log.warning("%s: weights unused by the %s head dropped: %s", source, head, hf_names(dropped))
  initialisable = bool(missing) and all(_is_head_path(config, head, p) for p in missing)
  if init_missing_heads and initialisable:  # never inside the layer stack, so in either layout
    log.warning("%s: newly initialised (train them before use): %s", source, hf_names(missing))
    fresh = _fresh_params(config, head, param_dtype, rng)
    flat = {**flat, **{p: fresh[p] for p in missing}}
    missing = []
  if missing or unexpected:
    hint = (" (pass init_missing_heads=True to initialise a new head)"
            if initialisable and not init_missing_heads else "")
    raise ConversionError(f"{source}: missing keys {_join(missing)}; unexpected keys {_join(unexpected)}{hint}")
  if bad:
    raise ConversionError(f"{source}: shape mismatch: {'; '.join(bad)}")
  return traverse_util.unflatten_dict({p: np.asarray(flat[p], expected[p].dtype) for p in expected})


def _params_for_head(tree, stored_head: str, config, head: str, **fit_kwargs):
  """Our parameters saved for `stored_head` -> those of `head`, by path: the base model's scope
  added or taken away, the layers in the layout config.scan_layers names, then `_fit_params`."""
  tree = _to_layout(tree, config)
  scope = BASE_SCOPE[config.model_type]
  if stored_head == "base":
    body, heads = tree, {}
  else:
    body, heads = tree.get(scope, {}), {k: v for k, v in tree.items() if k != scope}
  prefix = () if head == "base" else (scope,)
  flat = traverse_util.flatten_dict(heads)
  flat.update({prefix + p: v for p, v in traverse_util.flatten_dict(body).items()})
  return _fit_params(flat, config, head, **fit_kwargs)


# ----------------------------------------------------------------------------- state dicts

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


# ----------------------------------------------------------------------------- reading files

def _one_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"


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
  """Our config of a model directory (Hugging Face or ours) from its config.json alone (no
  weights are read); config_overrides as load_pretrained's."""
  return _read_config(Path(path).expanduser(), **config_overrides)[1]


def _restore_flax_params(params_dir: Path):
  import orbax.checkpoint as ocp
  if not params_dir.is_dir():
    raise ConversionError(f"{params_dir}: missing parameter directory")
  # orbax refuses relative paths (and its metadata call then returns None instead of raising).
  absolute = params_dir.absolute()
  with ocp.PyTreeCheckpointer() as checkpointer:
    # orbax returns no metadata when its files are missing or unreadable.
    metadata = checkpointer.metadata(absolute).item_metadata
    if metadata is None:
      raise ConversionError(f"{params_dir}: unreadable orbax checkpoint (its metadata files are missing or corrupt)")
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata.tree)
    try:
      return checkpointer.restore(absolute, restore_args=restore_args)
    except (OSError, ValueError) as e:  # what tensorstore raises for missing and truncated array files
      reason = _one_line(e).split(" [tensorstore_spec")[0]  # the spec is a page of JSON
      raise ConversionError(f"{params_dir}: unreadable orbax checkpoint ({reason})") from e


def load_pretrained(path, head: str = "masked_lm", *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                    init_missing_heads: bool = False, rng: Optional[jax.Array] = None, **config_overrides):
  """(model, params) from a Hugging Face directory or our Flax directory (config.json decides).

  config_overrides replace config fields (scan_layers=True, remat_policy="full",
  attention_impl="dot_product", num_labels=3, ...). params are numpy arrays in param_dtype, in
  the layout config.scan_layers names. init_missing_heads=True initialises (from rng) the pooler
  and head parameters a checkpoint lacks, e.g. to fine-tune a base model into a classifier."""
  directory = Path(path).expanduser()
  hf_config, config = _read_config(directory, **config_overrides)
  if head not in models.HEADS_BY_TYPE[config.model_type]:
    raise ConversionError(f"{directory}: head {head!r} does not exist for {config.model_type}; "
                          f"choose from {sorted(models.HEADS_BY_TYPE[config.model_type])}")
  fit_kwargs = dict(init_missing_heads=init_missing_heads, rng=rng, param_dtype=param_dtype)
  if FLAX_HEAD_KEY in hf_config:  # our own paths: no detour through PyTorch names
    stored = _restore_flax_params(directory / "params")
    params = _params_for_head(stored, hf_config[FLAX_HEAD_KEY], config, head, source=str(directory / "params"),
                              **fit_kwargs)
  else:
    params = state_dict_to_params(read_hf_state_dict(directory), config, head, source=str(directory), **fit_kwargs)
  model = models.get_model(config, head, dtype=dtype, param_dtype=param_dtype)
  # Flax modules are frozen dataclasses; an attribute that is not a field changes no equality.
  object.__setattr__(model, SOURCE_ATTR, str(directory.absolute()))
  return model, params


# ----------------------------------------------------------------------------- writing files

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
  out_dir = Path(out_dir).expanduser().absolute()
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


def _hf_config_dict(config, head: str, include_compile_fields: bool) -> dict:
  d = model_layers.config_to_hf_dict(config, include_compile_fields=include_compile_fields)
  d["architectures"] = [architecture_name(config, head)]
  if head == "sequence_classification" and config.num_labels == 1:
    # One output is a regression head (STS-B); transformers' pipelines and losses read it here.
    d["problem_type"] = "regression"
  return d


def save_pretrained(model, params, out_dir, tokenizer_dir=None, *, overwrite: bool = False) -> None:
  """A Hugging Face PyTorch directory: config.json, model.safetensors, tokenizer files (from
  tokenizer_dir, else from the directory the model was loaded from)."""
  from safetensors.numpy import save_file
  head = _head_of(model)
  state_dict = params_to_state_dict(params, model.config, head)
  with _atomic_directory(out_dir, overwrite) as tmp:
    (tmp / "config.json").write_text(json.dumps(_hf_config_dict(model.config, head, False), indent=2) + "\n")
    save_file(state_dict, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    _copy_tokenizer(model, tokenizer_dir, tmp)


def save_flax(model, params, out_dir, tokenizer_dir=None, *, overwrite: bool = False) -> None:
  """Our Flax directory (see the module docstring), in the layout model.config.scan_layers names."""
  import orbax.checkpoint as ocp
  head, config = _head_of(model), model.config
  _checked(params, config, head)
  tree = jax.tree.map(np.asarray, _to_layout(params, config))
  with _atomic_directory(out_dir, overwrite) as tmp:
    d = _hf_config_dict(config, head, True)
    d[FLAX_HEAD_KEY] = head
    (tmp / "config.json").write_text(json.dumps(d, indent=2) + "\n")
    with ocp.PyTreeCheckpointer() as checkpointer:
      checkpointer.save(tmp / "params", tree)
    _copy_tokenizer(model, tokenizer_dir, tmp)


def convert_main(to: str, src: str, dst: str, head: Optional[str] = None, *, overwrite: bool = False) -> None:
  """`distilbert-jax convert`: to="flax" (HF dir -> our Flax dir) or "pytorch" (Flax dir -> HF dir).
  head defaults to the source's own: its config's architectures, or our distilbert_jax_head."""
  if to not in ("flax", "pytorch"):
    raise ConversionError(f"convert: --to must be 'flax' or 'pytorch', got {to!r}")
  hf_config, _ = _read_config(Path(src))
  _check_output(Path(dst), overwrite, "add --overwrite to replace it")
  is_flax = FLAX_HEAD_KEY in hf_config
  if (to == "flax") == is_flax:
    kind = "our Flax directory" if is_flax else "a Hugging Face directory"
    raise ConversionError(f"{src}: is {kind}; converting to {to} needs the other kind")
  if head is None:
    head = hf_config[FLAX_HEAD_KEY] if is_flax else head_from_architectures(hf_config, f"{src}/config.json")
  model, params = load_pretrained(src, head=head)
  save = save_flax if to == "flax" else save_pretrained
  save(model, params, dst, tokenizer_dir=src, overwrite=overwrite)
  log.info("converted %s (%s, %s head) -> %s", src, model.config.model_type, head, dst)


# ----------------------------------------------------------------------------- student initialisation

def default_student_layers(teacher_layers: int, student_layers: Optional[int] = None) -> tuple[int, ...]:
  """Evenly spaced teacher layers, first and last included: round(linspace(0, n - 1, k)).
  For 12 -> 6 this is (0, 2, 4, 7, 9, 11), extract_distilbert.py's choice; k defaults to n // 2."""
  k = student_layers or max(teacher_layers // 2, 1)
  if not 1 <= k <= teacher_layers:
    raise ValueError(f"cannot pick {k} student layers from a {teacher_layers}-layer teacher")
  return tuple(int(i) for i in np.round(np.linspace(0, teacher_layers - 1, k)))


def _student_config(teacher_config, student_type: str, n_layers: int, overrides: dict):
  t = teacher_config
  compile_fields = {f: getattr(t, f) for f in model_layers.COMPILE_FIELDS}
  if student_type == t.model_type:
    counted = "n_layers" if student_type == "distilbert" else "num_hidden_layers"
    return dataclasses.replace(t, **{counted: n_layers}, **overrides)
  if student_type == "distilbert":
    if t.layer_norm_eps != 1e-12:
      log.warning("DistilBERT fixes LayerNorm eps at 1e-12; the teacher used %g", t.layer_norm_eps)
    inherited = dict(
        vocab_size=t.vocab_size, max_position_embeddings=t.max_position_embeddings, n_layers=n_layers,
        n_heads=t.num_attention_heads, dim=t.hidden_size, hidden_dim=t.intermediate_size,
        dropout=t.hidden_dropout_prob, attention_dropout=t.attention_probs_dropout_prob, activation=t.hidden_act,
        initializer_range=t.initializer_range, pad_token_id=t.pad_token_id,
        tie_word_embeddings=t.tie_word_embeddings, id2label=t.id2label, **compile_fields)
    return models.DistilBertConfig(**{**inherited, **overrides})  # any inherited field may be overridden
  raise ValueError(f"a {student_type} student from a {t.model_type} teacher is not supported")


def _rename(path: tuple, table: Optional[dict]) -> Optional[tuple]:
  """path with its prefix renamed by `table` (None: every path as it is); None if no entry matches."""
  if table is None:
    return path
  for old, new in table.items():
    if path[:len(old)] == old:
      return new + path[len(old):]
  return None


def _take_layers(layer_dict: dict, chosen: tuple[int, ...], stacked: bool) -> dict:
  """Layers `chosen` of a `layer` scope in either layout -> layers 0..k-1, stacked on a leading
  axis (stacked=True) or unrolled ({"0": ..., "1": ...}); numpy copies, never views of the input."""
  if _is_unrolled(layer_dict):
    picked = [layer_dict[str(i)] for i in chosen]
    if stacked:
      return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *picked)
    return {str(s): jax.tree.map(np.array, layer) for s, layer in enumerate(picked)}
  index = np.asarray(chosen)
  taken = jax.tree.map(lambda x: np.asarray(x[index]), layer_dict)  # one gather along the `layers` axis
  if stacked:
    return taken
  return {str(s): jax.tree.map(lambda x: x[s], taken) for s in range(len(chosen))}


def student_config_of(teacher_config, *, layers: Optional[Sequence[int]] = None, student_type: str = "distilbert",
                      **student_config_overrides):
  """(student config, the teacher layers it takes) of student_from_teacher, from the teacher's
  config alone: what an ahead-of-time compile needs, with no weights read."""
  overrides = dict(student_config_overrides)
  count = overrides.pop("n_layers", None) or overrides.pop("num_hidden_layers", None)
  if layers is None:
    layers = default_student_layers(teacher_config.num_hidden_layers, count)
  layers = tuple(int(i) for i in layers)
  if not layers or any(not 0 <= i < teacher_config.num_hidden_layers for i in layers):
    raise ValueError(f"layers {layers} must be a non-empty list of teacher layers "
                     f"0..{teacher_config.num_hidden_layers - 1}")
  if count is not None and count != len(layers):
    raise ValueError(f"{len(layers)} layers chosen but the overrides ask for {count}")
  return _student_config(teacher_config, student_type, len(layers), overrides), layers


def student_from_teacher(teacher_config, teacher_params, *, teacher_head: str, layers: Optional[Sequence[int]] = None,
                         student_type: str = "distilbert", student_head: str = "masked_lm",
                         rng: Optional[jax.Array] = None, **student_config_overrides):
  """(student_config, student_params) initialised from chosen teacher layers, as the original
  scripts/extract_distilbert.py: word and position embeddings and the embedding LayerNorm;
  teacher layers `layers` (default: default_student_layers) become student layers 0..k-1; the MLM
  transform and output bias when both have an MLM head; parameters the teacher lacks (e.g. an
  MLM head under a BertModel teacher, a classifier) are newly initialised from rng.

  A DistilBERT student has no token-type embeddings. BERT adds token_type_embeddings[0] to every
  position; extract_distilbert.py drops it (it does not fold it into the position table), and so
  do we: the student's first outputs differ from the teacher's by that vector. A BERT student
  (student_type="bert") keeps token types and the pooler, so all of a teacher's layers reproduce
  the teacher exactly. Teacher params may be in either layout; the student's follow its config.
  """
  student_config, layers = student_config_of(teacher_config, layers=layers, student_type=student_type,
                                             **student_config_overrides)

  source = f"student of {architecture_name(teacher_config, teacher_head)}"
  t_type = teacher_config.model_type
  flat_teacher = _checked(teacher_params, teacher_config, teacher_head, "teacher params")
  renamed = t_type != student_type  # a BERT teacher, a DistilBERT student
  t_base = () if teacher_head == "base" else (BASE_SCOPE[t_type],)
  s_base = () if student_head == "base" else (BASE_SCOPE[student_type],)
  student = {}
  for path, value in flat_teacher.items():
    if t_base and path[0] != t_base[0]:  # a head parameter: cls/..., classifier/...
      new = _rename(path, BERT_TO_DISTILBERT_HEAD if renamed else None)
    elif path[len(t_base):][:2] == LAYER_PATH[t_type]:
      continue  # the chosen layers are taken below
    else:
      new = _rename(path[len(t_base):], BERT_TO_DISTILBERT_BODY if renamed else None)
      new = None if new is None else s_base + new
    if new is not None:
      student[new] = np.array(value)
  t_layer_scope, layer_scope = t_base + LAYER_PATH[t_type], s_base + LAYER_PATH[student_type]
  t_layers = traverse_util.unflatten_dict({p[len(t_layer_scope):]: v for p, v in flat_teacher.items()
                                           if p[:len(t_layer_scope)] == t_layer_scope})
  chosen = _take_layers(t_layers, layers, stacked=student_config.scan_layers)
  for path, value in traverse_util.flatten_dict(chosen).items():
    index, inner = ((), path) if student_config.scan_layers else (path[:1], path[1:])
    student[layer_scope + index + _rename(inner, BERT_TO_DISTILBERT_LAYER if renamed else None)] = value
  # What the student's head lacks (another head's parameters, a sinusoidal student's position
  # table) is left behind; what the teacher lacks is newly initialised.
  expected = _layout_shapes(student_config, student_head, student_config.scan_layers)
  student = {p: v for p, v in student.items() if p in expected}
  params = _fit_params(student, student_config, student_head, init_missing_heads=True, rng=rng,
                       param_dtype=jnp.float32, source=source)
  return student_config, params
