"""Our Flax directory: writing it (save_flax) and reading its parameters into any head by path,
with no detour through PyTorch names.

    config.json   the Hugging Face config dict, plus our compile fields (scan_layers,
                  remat_policy, attention_impl), "architectures" and "distilbert_jax_head"
    params/       the parameter tree as numpy arrays, saved by orbax (PyTreeCheckpointer), in the
                  layout that config.json's scan_layers names (scanned: layers stacked on a leading axis)
    tokenizer files copied from the source directory (vocab.txt, tokenizer.json, ...)
    modules.json, 1_Pooling/, ... the source's sentence-transformers files, if it has them
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

from distilbert_jax.convert.directories import (_atomic_directory, _copy_sentence_transformers, _copy_tokenizer,
                                                _head_of, _hf_config_dict)
from distilbert_jax.convert.layout import _checked, _fit_params, _to_layout
from distilbert_jax.convert.names import BASE_SCOPE, ConversionError, _one_line


FLAX_HEAD_KEY = "distilbert_jax_head"


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


def save_flax(model, params, out_dir, tokenizer_dir=None, *, overwrite: bool = False,
              sentence_transformers_source=None) -> None:
  """Our Flax directory (see the module docstring), in the layout model.config.scan_layers names;
  tokenizer and sentence-transformers files as save_pretrained copies them."""
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
    _copy_sentence_transformers(model, sentence_transformers_source, tmp)
