"""The encoder's layer stack: unrolled or one nn.scan, with an optional rematerialisation policy.

The config fields `scan_layers` and `remat_policy` choose how the stack is compiled; neither
changes the math. Unrolled layers keep Hugging Face's parameter paths (layer/0, layer/1, ...);
scanned ones stack each parameter on a leading `layers` axis under `layer`.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax

from distilbert_jax.models.matmul import DENSE_OUTPUT

Array = jax.Array

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    # Keep the dense layers' products, in the computation dtype; recompute the cheap work (the
    # attention products, LayerNorm, GELU, softmax). By name, since the products themselves are
    # float32 before their cast, and a policy by primitive would keep those.
    "dots": jax.checkpoint_policies.save_only_these_names(DENSE_OUTPUT),
}


def run_encoder_stack(
    module: nn.Module,
    layer_cls,
    num_layers: int,
    hidden: Array,
    attention_mask: Array,
    *,
    deterministic: bool,
    output_attentions: bool,
    output_hidden_states: bool,
    output_qkv: bool = False,
    scan_layers: bool,
    remat_policy: str,
    layer_kwargs: dict,
) -> tuple[Array, Optional[tuple], Optional[tuple], Optional[tuple]]:
  """Applies `num_layers` layers, either unrolled (names layer/0, layer/1, ..., as Hugging
  Face's Flax classes) or as one `nn.scan` (name `layer`, parameters stacked on a leading
  `layers` axis, so compile time does not grow with depth).

  `layer_cls(**layer_kwargs)` is called as (hidden, attention_mask, deterministic,
  output_attentions, output_hidden_states, output_qkv) and returns (hidden, (hidden or None,
  attention probabilities or None, (query, key, value) or None)), the shape a scan step needs.
  hidden: [batch, length, hidden]. Returns the last hidden state, the tuple of all hidden
  states (embeddings first) or None, the tuple of attention probabilities or None, and the
  tuple of each layer's (query, key, value) or None.
  """
  if remat_policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {remat_policy!r}; supported: {sorted(REMAT_POLICIES)}")
  cls = layer_cls
  if remat_policy != "none":
    # self=0, hidden=1, attention_mask=2, deterministic=3, output_attentions=4, output_hidden_states=5,
    # output_qkv=6.
    cls = nn.remat(cls, policy=REMAT_POLICIES[remat_policy], static_argnums=(3, 4, 5, 6), prevent_cse=not scan_layers)
  flags = (deterministic, output_attentions, output_hidden_states, output_qkv)

  if scan_layers:
    scanned = nn.scan(
        cls,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * 5,
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    hidden_out, (all_hidden, all_attn, all_qkv) = scanned(**layer_kwargs, name="layer")(hidden, attention_mask, *flags)
    hidden_states = None
    if output_hidden_states:
      hidden_states = (hidden,) + tuple(all_hidden[i] for i in range(num_layers))
    attentions = tuple(all_attn[i] for i in range(num_layers)) if output_attentions else None
    qkv = tuple(tuple(x[i] for x in all_qkv) for i in range(num_layers)) if output_qkv else None
    return hidden_out, hidden_states, attentions, qkv

  hidden_states = (hidden,) if output_hidden_states else None
  attentions = () if output_attentions else None
  qkv = () if output_qkv else None
  # Unrolled layers live under a parent named `layer` so that paths read layer/0/..., as in
  # Hugging Face's former Flax classes.
  layers = _LayerList(layer_cls=cls, num_layers=num_layers, layer_kwargs=layer_kwargs, name="layer")
  for i in range(num_layers):
    hidden, (_, attn, layer_qkv) = layers(i, hidden, attention_mask, *flags)
    if output_hidden_states:
      hidden_states += (hidden,)
    if output_attentions:
      attentions += (attn,)
    if output_qkv:
      qkv += (layer_qkv,)
  return hidden, hidden_states, attentions, qkv


class _LayerList(nn.Module):
  """The unrolled layers as children 0, 1, ... of one scope (run_encoder_stack names it `layer`)."""

  layer_cls: Any
  num_layers: int
  layer_kwargs: dict

  def setup(self):
    self.layers = [self.layer_cls(**self.layer_kwargs, name=str(i)) for i in range(self.num_layers)]

  def __call__(self, i, hidden, attention_mask, deterministic, output_attentions, output_hidden_states, output_qkv):
    return self.layers[i](hidden, attention_mask, deterministic, output_attentions, output_hidden_states, output_qkv)
