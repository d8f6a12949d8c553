"""Our parameter trees against a model's: expected paths and shapes, the two layer layouts
(unrolled layer/0, layer/1, ... or scanned: stacked on a leading `layers` axis), and fitting a flat
tree to a head.

As nanoGPT's from_pretrained does, the expected tree comes from `jax.eval_shape(model.init)` and
every key and shape is checked; all missing and unexpected keys are reported together, in one line.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import flax
from flax import traverse_util
from flax.linen import meta

from distilbert_jax import models
from distilbert_jax.convert.names import BASE_SCOPE, HEAD_SCOPES, ConversionError, _hf_name

log = logging.getLogger(__name__)


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
