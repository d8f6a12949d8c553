"""Multi-head attention over padded sequences, its implementations and their selection.

Three implementations (the config field `attention_impl`): "xla", the explicit softmax of the
scores in float32; "dot_product", jax.nn.dot_product_attention, which leaves the fused kernel to
the platform's compiler (cuDNN on GPU); "blocked", an online softmax over blocks of keys that
never holds the [length, length] scores. "auto" picks one per backend (resolve_attention_impl).
Every matrix product here is matmul.einsum's, accumulated in float32.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax.models.matmul import einsum

Array = jax.Array

ATTENTION_IMPLEMENTATIONS = ("xla", "dot_product", "blocked")
ATTENTION_BLOCK = 128  # keys per step of the "blocked" attention


def resolve_attention_impl(name: str, backend: Optional[str] = None) -> str:
  """The attention implementation (ATTENTION_IMPLEMENTATIONS) that `name` stands for on
  `backend` (default: JAX's default backend). "auto": "dot_product" on GPU and TPU, where
  jax.nn.dot_product_attention leaves the fused kernel to the platform's compiler; "xla" on CPU,
  where the two measured within noise of each other (BENCHMARKS.md) and the explicit softmax is
  the one every other path (dropout, attention outputs) takes anyway."""
  if name != "auto":
    return name
  return "xla" if (backend or jax.default_backend()) == "cpu" else "dot_product"


def split_heads(x: Array, num_heads: int) -> Array:
  """[batch, length, heads * head_dim] -> [batch, length, heads, head_dim]."""
  return x.reshape(x.shape[:-1] + (num_heads, x.shape[-1] // num_heads))


def multi_head_attention(
    module: nn.Module,
    query: Array,
    key: Array,
    value: Array,
    attention_mask: Array,
    *,
    dropout_rate: float,
    deterministic: bool,
    implementation: str,
    output_attentions: bool,
) -> tuple[Array, Optional[Array]]:
  """Scaled dot-product attention over padded sequences.

  query, key, value: [batch, length, heads, head_dim]; attention_mask: [batch, length] (1 = real
  token, 0 = padding; only keys are masked, as Hugging Face does). Returns the context
  [batch, length, heads * head_dim] and, with output_attentions, the probabilities
  [batch, heads, length, length]. `module` supplies the dropout RNG.
  """
  batch, length, num_heads, head_dim = query.shape
  key_mask = attention_mask.astype(bool)[:, None, None, :]  # [batch, 1, 1, key_length]
  use_dropout = not deterministic and dropout_rate > 0.0
  # The fused kernel returns no probabilities and has no dropout: those cases take the XLA path.
  if implementation == "dot_product" and not output_attentions and not use_dropout:
    context = jax.nn.dot_product_attention(query, key, value, mask=key_mask)
    return context.reshape(batch, length, num_heads * head_dim), None
  if implementation not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}")
  scale = 1.0 / np.sqrt(head_dim)
  # Blocked has no probabilities to return or drop out either; short sequences gain nothing.
  if implementation == "blocked" and not output_attentions and not use_dropout and length > ATTENTION_BLOCK:
    context = blocked_attention(query, key, value, attention_mask, scale, ATTENTION_BLOCK)
    return context.reshape(batch, length, num_heads * head_dim), None
  # Scores and softmax in float32 even when computing in bfloat16: the softmax is where
  # low precision hurts (and where Hugging Face upcasts too).
  scores = einsum("bqhd,bkhd->bhqk", query, key, out_dtype=jnp.float32) * scale
  scores = jnp.where(key_mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  if use_dropout:
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  probs = probs.astype(value.dtype)
  context = einsum("bhqk,bkhd->bqhd", probs, value)
  return context.reshape(batch, length, num_heads * head_dim), (probs if output_attentions else None)


def blocked_attention(query: Array, key: Array, value: Array, attention_mask: Array, scale: float,
                      block: int = ATTENTION_BLOCK) -> Array:
  """softmax(scale * query key^T) value over `block` keys at a time, with the running maximum, sum and
  weighted sum of an online softmax (Milakov & Gimelshein, 2018; FlashAttention, Dao et al.,
  2022): no [length, length] scores are held at once.

  query, key, value: [batch, length, heads, head_dim]; attention_mask:
  [batch, length] (1 = real token), as in multi_head_attention. Returns [batch, length, heads,
  head_dim]. Masked keys score float32's minimum, as in the plain path; keys added to fill the
  last block score -inf, so they never count. How it compares with the plain path at 8 x 512 on
  CPU: BENCHMARKS.md (bfloat16 on CPU) and docs/performance.md.
  """
  batch, length, heads, head_dim = key.shape
  fill = -length % block
  key, value = (jnp.pad(x, ((0, 0), (0, fill), (0, 0), (0, 0))) for x in (key, value))
  key_mask = jnp.pad(attention_mask.astype(bool), ((0, 0), (0, fill)))
  exists = jnp.arange(length + fill) < length
  to_blocks = lambda x, axis: jnp.moveaxis(x.reshape(x.shape[:axis] + (-1, block) + x.shape[axis + 1:]), axis, 0)

  def step(carry, blocks):
    top, total, weighted = carry  # [batch, heads, length], the same, [batch, heads, length, head_dim]; float32
    k, v, mask, real = blocks
    scores = einsum("bqhd,bkhd->bhqk", query, k, out_dtype=jnp.float32) * scale
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    scores = jnp.where(real, scores, -jnp.inf)
    new_top = jnp.maximum(top, scores.max(-1))  # finite from the first block on: key 0 exists
    probs = jnp.exp(scores - new_top[..., None])
    rescale = jnp.exp(top - new_top)
    total = total * rescale + probs.sum(-1)
    block_sum = einsum("bhqk,bkhd->bhqd", probs.astype(v.dtype), v, out_dtype=jnp.float32)
    weighted = weighted * rescale[..., None] + block_sum
    return (new_top, total, weighted), None

  start = (jnp.full((batch, heads, length), -jnp.inf), jnp.zeros((batch, heads, length)),
           jnp.zeros((batch, heads, length, head_dim)))
  blocks = (to_blocks(key, 1), to_blocks(value, 1), to_blocks(key_mask, 1), to_blocks(exists, 0))
  (_, total, weighted), _ = jax.lax.scan(step, start, blocks)
  return jnp.swapaxes(weighted / total[..., None], 1, 2).astype(value.dtype)
