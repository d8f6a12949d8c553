"""load_pretrained: (model, params) from either kind of directory, a Hugging Face one or our Flax
one (config.json decides which), or from a Hugging Face Hub repo id (see hub.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp

from distilbert_jax import models
from distilbert_jax.convert.directories import SOURCE_ATTR, _read_config
from distilbert_jax.convert import hub
from distilbert_jax.convert.flax_format import FLAX_HEAD_KEY, _params_for_head, _restore_flax_params
from distilbert_jax.convert.huggingface import read_hf_state_dict, state_dict_to_params
from distilbert_jax.convert.names import ConversionError


def load_pretrained(path, head: str = "masked_lm", *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                    init_missing_heads: bool = False, rng: Optional[jax.Array] = None, on_device: bool = True,
                    **config_overrides):
  """(model, params) from a Hugging Face directory or our Flax directory (config.json decides);
  `path` may be a Hub repo id, `org/name` or `org/name@revision`, read from its snapshot directory.

  config_overrides replace config fields (scan_layers=True, remat_policy="full",
  attention_impl="dot_product", num_labels=3, ...). params are in param_dtype, in the layout
  config.scan_layers names: jax.Arrays on the default device, so that a jitted apply reads them
  where they are instead of copying them in on every call; on_device=False gives NumPy arrays
  (the converter's, which only writes them out again). init_missing_heads=True initialises (from
  rng) the pooler and head parameters a checkpoint lacks, e.g. to fine-tune a base model into a
  classifier."""
  directory = Path(hub.resolve(path))
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
  if on_device:
    params = jax.device_put(params)
  model = models.get_model(config, head, dtype=dtype, param_dtype=param_dtype)
  # Flax modules are frozen dataclasses; an attribute that is not a field changes no equality.
  object.__setattr__(model, SOURCE_ATTR, str(directory.absolute()))
  return model, params
