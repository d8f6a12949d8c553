"""The models' matrix products: einsum and dot_general accumulated in float32, with gradients
of the same kind, and the tied vocabulary projection with its written-out backward pass.

Every matrix product of the models goes through `einsum` here (nn.Dense through `dot_general`):
it accumulates in float32 whatever the computation dtype, then casts to that dtype. XLA:CPU
runs a bfloat16 x bfloat16 -> bfloat16 product on its float32 path, no faster than float32,
while a float32 result lets YNNPACK use the processor's bfloat16 dot instructions (avx512_bf16,
amx_bf16; see models.compiler_options). GPUs and TPUs accumulate bfloat16 products in float32
anyway. The gradients are written out so that they are products of the same kind: autodiff
would pair the float32 result's cotangent with a bfloat16 operand, which XLA:CPU again computes
on its float32 path. What these products gain on CPU: BENCHMARKS.md (bfloat16 on CPU) and
docs/performance.md.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

Dtype = Any
Array = jax.Array

DENSE_OUTPUT = "dense_output"  # the checkpoint name of every dense layer's product (`dot_general`)


def accumulation_dtype(dtype) -> jnp.dtype:
  """The dtype products of `dtype` operands accumulate in: float32, or float64 for float64."""
  return jnp.promote_types(dtype, jnp.float32)


def _accumulated_einsum(subscripts: str, lhs: Array, rhs: Array, out_dtype) -> Array:
  return jnp.einsum(subscripts, lhs, rhs, preferred_element_type=accumulation_dtype(out_dtype)).astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _einsum(subscripts, out_dtype, lhs, rhs):
  return _accumulated_einsum(subscripts, lhs, rhs, out_dtype)


def _einsum_fwd(subscripts, out_dtype, lhs, rhs):
  return _accumulated_einsum(subscripts, lhs, rhs, out_dtype), (lhs, rhs)


def _einsum_bwd(subscripts, out_dtype, residuals, cotangent):
  lhs, rhs = residuals
  operands, out = subscripts.split("->")
  a, b = operands.split(",")
  # In the operands' dtype, as the forward product: a float32 result (attention scores) included.
  cotangent = cotangent.astype(jnp.result_type(lhs, rhs))
  return (_accumulated_einsum(f"{out},{b}->{a}", cotangent, rhs, lhs.dtype),
          _accumulated_einsum(f"{a},{out}->{b}", lhs, cotangent, rhs.dtype))


_einsum.defvjp(_einsum_fwd, _einsum_bwd)


def einsum(subscripts: str, lhs: Array, rhs: Array, out_dtype: Optional[Dtype] = None) -> Array:
  """jnp.einsum of two operands, accumulated in float32 and returned in `out_dtype` (default:
  the operands' dtype); its gradients are computed the same way.

  subscripts: explicit ("bqhd,bkhd->bhqk"), and every index of an operand appears in the other
  operand or in the output, as in dense layers and attention, so the gradients are einsums too.
  """
  return _einsum(subscripts, jnp.dtype(out_dtype or jnp.result_type(lhs, rhs)), lhs, rhs)


def dot_general(lhs: Array, rhs: Array, dimension_numbers, precision=None, preferred_element_type=None) -> Array:
  """jax.lax.dot_general computed as `einsum` computes it, for nn.Dense(dot_general=...);
  preferred_element_type, if given, is the dtype of the result."""
  if precision is not None:
    raise ValueError("the models' matrix products take no per-product precision")
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  letters = iter("abcdefghijklmnopqrstuvwxyz")
  a = [next(letters) for _ in range(lhs.ndim)]
  b = [next(letters) for _ in range(rhs.ndim)]
  for i, j in zip((*lhs_contract, *lhs_batch), (*rhs_contract, *rhs_batch)):
    b[j] = a[i]
  kept = lambda names, paired: [n for d, n in enumerate(names) if d not in paired]
  out = [a[i] for i in lhs_batch] + kept(a, (*lhs_contract, *lhs_batch)) + kept(b, (*rhs_contract, *rhs_batch))
  product = einsum(f"{''.join(a)},{''.join(b)}->{''.join(out)}", lhs, rhs, preferred_element_type)
  return checkpoint_name(product, DENSE_OUTPUT)


@jax.custom_vjp
def tied_projection(hidden: Array, embedding: Array, bias: Array) -> Array:
  """The tied vocabulary projection `hidden @ embedding.T + bias`.

  hidden: [..., dim]; embedding: [vocab, dim] (the word embedding matrix); bias: [vocab].
  Returns logits [..., vocab]. The backward pass is written out as three matrix products so that
  the embedding gradient is one [vocab, rows] x [rows, dim] product and the bias gradient a
  [rows] x [rows, vocab] one, all accumulated in float32 (see `einsum`). Left to autodiff, XLA:CPU
  computed the bias gradient as a slow column reduction over the [rows, vocab] cotangent (see
  BENCHMARKS.md and the lever log in docs/performance.md).
  """
  return _tied_projection_fwd(hidden, embedding, bias)[0]


def _tied_projection_fwd(hidden, embedding, bias):
  logits = _accumulated_einsum("...d,vd->...v", hidden, embedding, hidden.dtype) + bias
  return logits, (hidden, embedding, bias)


def _tied_projection_bwd(residuals, cotangent):
  hidden, embedding, bias = residuals
  rows = cotangent.reshape(-1, cotangent.shape[-1])  # [rows, vocab]
  flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # [rows, dim]
  d_hidden = _accumulated_einsum("...v,vd->...d", cotangent, embedding, hidden.dtype)
  d_embedding = _accumulated_einsum("rv,rd->vd", rows, flat_hidden, embedding.dtype)
  d_bias = _accumulated_einsum("r,rv->v", jnp.ones((rows.shape[0],), rows.dtype), rows, bias.dtype)
  return d_hidden, d_embedding, d_bias


tied_projection.defvjp(_tied_projection_fwd, _tied_projection_bwd)
