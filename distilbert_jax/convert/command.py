"""The `distilbert-jax convert` command: a Hugging Face directory to our Flax directory, or back."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from distilbert_jax import storage
from distilbert_jax.convert import hub
from distilbert_jax.convert.directories import _check_output, _read_config
from distilbert_jax.convert.flax_format import FLAX_HEAD_KEY, save_flax
from distilbert_jax.convert.huggingface import save_pretrained
from distilbert_jax.convert.loading import load_pretrained
from distilbert_jax.convert.names import ConversionError, head_from_architectures

log = logging.getLogger(__name__)


def convert_main(to: str, src: str, dst: str, head: Optional[str] = None, *, overwrite: bool = False) -> None:
  """`distilbert-jax convert`: to="flax" (HF dir -> our Flax dir) or "pytorch" (Flax dir -> HF dir).
  src may be a Hub repo id (ID or ID@REVISION). head defaults to the source's own: its config's
  architectures, or our distilbert_jax_head."""
  if to not in ("flax", "pytorch"):
    raise ConversionError(f"convert: --to must be 'flax' or 'pytorch', got {to!r}")
  # Before any download; the path as given (gs:// or local) names the output in the error.
  _check_output(storage.path(dst) if storage.is_remote(dst) else Path(dst), overwrite, "add --overwrite to replace it")
  src = hub.resolve(src)
  hf_config, _ = _read_config(Path(src))
  is_flax = FLAX_HEAD_KEY in hf_config
  if (to == "flax") == is_flax:
    kind = "our Flax directory" if is_flax else "a Hugging Face directory"
    raise ConversionError(f"{src}: is {kind}; converting to {to} needs the other kind")
  if head is None:
    head = hf_config[FLAX_HEAD_KEY] if is_flax else head_from_architectures(hf_config, f"{src}/config.json")
  model, params = load_pretrained(src, head=head, on_device=False)
  save = save_flax if to == "flax" else save_pretrained
  save(model, params, dst, tokenizer_dir=src, overwrite=overwrite)
  log.info("converted %s (%s, %s head) -> %s", src, model.config.model_type, head, dst)
