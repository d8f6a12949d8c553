"""Pieces shared by the BERT and DistilBERT encoders: activations, attention, outputs, init.

Both architectures are the same post-LayerNorm transformer (Vaswani et al., 2017; Devlin et al.,
2019); they differ in parameter names and in where dropout sits, so each architecture file keeps
its own layer modules. Those derive from `Module` (config, dtype, param_dtype and the dense,
LayerNorm and embedding builders) and share the attention core, the layer stack, the gather at
masked positions and the vocabulary projection here.

Logical axis names carried by every parameter (mapped onto mesh axes by `sharding.py`):
  vocab: vocabulary rows; embed: the model (hidden) dimension; heads: the flattened
  heads * head_dim dimension of the query/key/value projections; mlp: the feed-forward inner
  dimension; position, type: rows of the position and token-type tables; classes: head outputs;
  layers: the stacked layer axis when the encoder is scanned.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

Dtype = Any
Array = jax.Array

# Hugging Face `ACT2FN` names for the activations that change the math of BERT-family models.
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact erf GELU, torch's default
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),  # tanh approximation (GPT-2)
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}

ATTENTION_IMPLEMENTATIONS = ("xla", "dot_product", "blocked")
ATTENTION_BLOCK = 128  # keys per step of the "blocked" attention
DENSE_OUTPUT = "dense_output"  # the checkpoint name of every dense layer's product (`dot_general`)
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    # Keep the dense layers' products, in the computation dtype; recompute the cheap work (the
    # attention products, LayerNorm, GELU, softmax). By name, since the products themselves are
    # float32 before their cast, and a policy by primitive would keep those.
    "dots": jax.checkpoint_policies.save_only_these_names(DENSE_OUTPUT),
}


# Config fields that are ours, not Hugging Face's: how the encoder is compiled. They live in our
# Flax directories' config.json and never in an exported Hugging Face one.
COMPILE_FIELDS = ("scan_layers", "remat_policy", "attention_impl")
# Hugging Face's label names when a config names none (num_labels=2).
DEFAULT_LABELS = ("LABEL_0", "LABEL_1")


def config_from_hf_dict(cls, d: dict):
  """A frozen config dataclass from a Hugging Face config.json dict (unknown keys ignored)."""
  kwargs = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d and f.name != "id2label"}
  if "id2label" in d:
    kwargs["id2label"] = tuple(d["id2label"][k] for k in sorted(d["id2label"], key=int))
  elif "num_labels" in d:
    kwargs["id2label"] = tuple(f"LABEL_{i}" for i in range(d["num_labels"]))
  if kwargs.get("id2label") == DEFAULT_LABELS:
    kwargs["id2label"] = None  # what config_to_hf_dict writes for None: the round trip is exact
  return cls(**kwargs)


def config_to_hf_dict(config, include_compile_fields: bool = False) -> dict:
  d = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
  names = d.pop("id2label") or DEFAULT_LABELS
  d["id2label"] = {str(i): n for i, n in enumerate(names)}
  d["label2id"] = {n: i for i, n in enumerate(names)}
  if not include_compile_fields:
    for name in COMPILE_FIELDS:
      d.pop(name)
  d["model_type"] = config.model_type
  return d


def check_length(length: int, config) -> None:
  """Inputs may not be longer than the position table: JAX's gather returns NaN past its end
  where PyTorch's raises, so every output would silently be NaN."""
  if length > config.max_position_embeddings:
    raise ValueError(f"inputs of {length} tokens are longer than max_position_embeddings="
                     f"{config.max_position_embeddings}; truncate them to at most {config.max_position_embeddings} "
                     f"tokens")


def get_activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; supported: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


@flax.struct.dataclass
class ModelOutput:
  """What every model returns; fields a head does not produce are None.

  last_hidden_state: [batch, length, hidden]
  pooler_output: [batch, hidden] (BERT models with a pooler)
  hidden_states: tuple of num_layers + 1 arrays [batch, length, hidden] (embeddings first),
    with output_hidden_states=True
  attentions: tuple of num_layers arrays [batch, heads, length, length], with output_attentions
  logits: [batch, length, vocab] (masked LM; [batch, n, vocab] with masked_positions [batch, n],
    [n, vocab] with flat masked_positions [n]; see `gather_positions`),
    [batch, num_labels] (sequence classification), [batch, num_choices] (multiple choice),
    [batch, length, num_labels] (token classification)
  start_logits, end_logits: [batch, length] (question answering)
  seq_relationship_logits: [batch, 2] (BERT pretraining, next-sentence prediction)
  """
  last_hidden_state: Optional[Array] = None
  pooler_output: Optional[Array] = None
  hidden_states: Optional[tuple] = None
  attentions: Optional[tuple] = None
  logits: Optional[Array] = None
  start_logits: Optional[Array] = None
  end_logits: Optional[Array] = None
  seq_relationship_logits: Optional[Array] = None

  @property
  def prediction_logits(self) -> Optional[Array]:
    """transformers' name for the masked-LM logits of BERT pretraining: the same array as `logits`."""
    return self.logits


def normal_init(stddev: float, names: Sequence[Optional[str]]):
  """Hugging Face's init (normal with `initializer_range`), tagged with logical axis names."""
  return nn.with_logical_partitioning(nn.initializers.normal(stddev), tuple(names))


def zeros_init(names):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), tuple(names))


def ones_init(names):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), tuple(names))


# ----------------------------------------------------------------------------- matrix products
#
# Every matrix product of the models goes through `einsum` here (nn.Dense through `dot_general`):
# it accumulates in float32 whatever the computation dtype, then casts to that dtype. XLA:CPU
# runs a bfloat16 x bfloat16 -> bfloat16 product on its float32 path, no faster than float32,
# while a float32 result lets YNNPACK use the processor's bfloat16 dot instructions (avx512_bf16,
# amx_bf16; see models.compiler_options): [1024, 768] x [768, 3072] took 25 instead of 58 ms on
# 2 Zen 4 cores. GPUs and TPUs accumulate bfloat16 products in float32 anyway. The gradients are
# written out so that they are products of the same kind (48 instead of 116 ms for both of that
# product): autodiff would pair the float32 result's cotangent with a bfloat16 operand, which
# XLA:CPU again computes on its float32 path.

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


class Module(nn.Module):
  """A part of a BERT-family model. Every part carries the same three settings and builds its
  dense layers, LayerNorms and embeddings with the helpers below, so that initialisation and
  logical axis names are decided once for both architectures.

  config: the architecture's config dataclass; dtype: the computation dtype; param_dtype: the
  dtype parameters are stored in.
  """
  config: Any
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def kw(self) -> dict:
    """The settings a child part inherits: `Child(**self.kw, name=...)`."""
    return dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype)

  def dense(self, features: int, axes: tuple, name: Optional[str] = None, use_bias: bool = True) -> nn.Dense:
    """nn.Dense with Hugging Face's init; `axes` name the kernel's (input, output) dimensions."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=self.dtype,
        dot_general=dot_general,
        param_dtype=self.param_dtype,
        kernel_init=normal_init(self.config.initializer_range, axes),
        bias_init=zeros_init(axes[-1:]),
        name=name,
    )

  def layer_norm(self, name: Optional[str] = None) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=self.config.layer_norm_eps,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        scale_init=ones_init(("embed",)),
        bias_init=zeros_init(("embed",)),
        name=name,
    )

  def embed(self, rows: int, axes: tuple) -> nn.Embed:
    """A table of `rows` vectors of the hidden size; `axes` name its (row, embed) dimensions."""
    return nn.Embed(rows, self.config.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                    embedding_init=normal_init(self.config.initializer_range, axes))


class VocabProjection(Module):
  """The masked-LM output layer: logits = hidden @ W + bias, where W is the word embedding
  matrix (transposed) when config.tie_word_embeddings, else a kernel of its own.

  The bias is this scope's `bias`. An untied kernel is this scope's `kernel` (DistilBERT's
  `vocab_projector`), or `<decoder>/kernel` when `decoder` names a child scope (BERT's
  `cls/predictions/decoder`). Hugging Face's parameter paths, so its checkpoints load unchanged.
  """
  decoder: Optional[str] = None

  def project(self, hidden: Array, embedding: Array) -> Array:
    """hidden [..., hidden_size], embedding [vocab, hidden_size] -> logits [..., vocab]."""
    c = self.config
    bias = self.param("bias", zeros_init(("vocab",)), (c.vocab_size,), self.param_dtype).astype(hidden.dtype)
    if c.tie_word_embeddings:
      return tied_projection(hidden, embedding.astype(hidden.dtype), bias)
    if self.decoder is not None:
      return self.dense(c.vocab_size, ("embed", "vocab"), self.decoder, use_bias=False)(hidden) + bias
    kernel = self.param("kernel", normal_init(c.initializer_range, ("embed", "vocab")),
                        (hidden.shape[-1], c.vocab_size), self.param_dtype)
    return dot_general(hidden, kernel.astype(hidden.dtype), (((hidden.ndim - 1,), (0,)), ((), ()))) + bias

  @nn.compact
  def __call__(self, hidden: Array, embedding: Array) -> Array:
    return self.project(hidden, embedding)


def gather_positions(hidden: Array, masked_positions: Optional[Array]) -> Array:
  """The hidden states at the positions a masked-LM loss needs, so that the vocabulary
  projection runs only there.

  hidden: [batch, length, dim]. masked_positions:
    None: hidden unchanged.
    [batch, n]: per-row indices into length -> [batch, n, dim].
    [n]: indices into the flattened batch * length positions (row b, position i is
      b * length + i) -> [n, dim]: the masked tokens of a whole batch, however unevenly they
      fall across its rows.
  """
  if masked_positions is None:
    return hidden
  positions = jnp.asarray(masked_positions).astype(jnp.int32)
  if positions.ndim == 1:
    return jnp.take(hidden.reshape(-1, hidden.shape[-1]), positions, axis=0)
  if positions.ndim == 2:
    return jnp.take_along_axis(hidden, positions[..., None], axis=1)
  raise ValueError(f"masked_positions must be [batch, n] or flat [n], got shape {positions.shape}")


def embed_tokens(embed: nn.Embed, input_ids: Array, pad_token_id: Optional[int]) -> Array:
  """input_ids [batch, length] -> [batch, length, dim], with torch's `padding_idx` semantics:
  positions holding the pad id contribute no gradient to the embedding table (transformers builds
  both models' word embeddings with padding_idx=pad_token_id)."""
  input_ids = input_ids.astype(jnp.int32)
  vectors = embed(input_ids)
  if pad_token_id is None:
    return vectors
  return jnp.where((input_ids == pad_token_id)[..., None], jax.lax.stop_gradient(vectors), vectors)


@jax.custom_vjp
def tied_projection(hidden: Array, embedding: Array, bias: Array) -> Array:
  """The tied vocabulary projection `hidden @ embedding.T + bias`.

  hidden: [..., dim]; embedding: [vocab, dim] (the word embedding matrix); bias: [vocab].
  Returns logits [..., vocab]. The backward pass is written out as three matrix products so that
  the embedding gradient is one [vocab, rows] x [rows, dim] product and the bias gradient a
  [rows] x [rows, vocab] one, all accumulated in float32 (see `einsum`). Left to autodiff, XLA:CPU computed the
  bias gradient as a column reduction over the [rows, vocab] cotangent that alone cost 0.34 s of
  a 5.7 s DistilBERT-base step at 8 x 128 (BENCHMARKS.md, lever log).
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


@functools.lru_cache(maxsize=8)
def sinusoidal_position_table(num_positions: int, dim: int) -> np.ndarray:
  """[num_positions, dim] float32, bit-identical to transformers' create_sinusoidal_embeddings.
  Cached (the Python loop takes about 0.6 s at 512 x 768, on every trace) and read-only, since the
  cache shares it."""
  position_enc = np.array(
      [[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for pos in range(num_positions)]
  )
  table = np.zeros((num_positions, dim), np.float32)
  table[:, 0::2] = np.sin(position_enc[:, 0::2]).astype(np.float32)
  table[:, 1::2] = np.cos(position_enc[:, 1::2]).astype(np.float32)
  table.flags.writeable = False
  return table


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
  last block score -inf, so they never count. DistilBERT-base forward at 8 x 512 on 2 shared Zen 4
  cores, side by side with the plain path: float32 4.51 vs 5.11 s; bfloat16 3.27 vs 3.18 s (no gain).
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
    scan_layers: bool,
    remat_policy: str,
    layer_kwargs: dict,
) -> tuple[Array, Optional[tuple], Optional[tuple]]:
  """Applies `num_layers` layers, either unrolled (names layer/0, layer/1, ..., as Hugging
  Face's Flax classes) or as one `nn.scan` (name `layer`, parameters stacked on a leading
  `layers` axis, so compile time does not grow with depth).

  `layer_cls(**layer_kwargs)` is called as (hidden, attention_mask, deterministic,
  output_attentions, output_hidden_states) and returns (hidden, (hidden or None, attention
  probabilities or None)), the shape a scan step needs.
  hidden: [batch, length, hidden]. Returns the last hidden state, the tuple of all hidden
  states (embeddings first) or None, and the tuple of attention probabilities or None.
  """
  if remat_policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {remat_policy!r}; supported: {sorted(REMAT_POLICIES)}")
  cls = layer_cls
  if remat_policy != "none":
    # self=0, hidden=1, attention_mask=2, deterministic=3, output_attentions=4, output_hidden_states=5.
    cls = nn.remat(cls, policy=REMAT_POLICIES[remat_policy], static_argnums=(3, 4, 5), prevent_cse=not scan_layers)
  flags = (deterministic, output_attentions, output_hidden_states)

  if scan_layers:
    scanned = nn.scan(
        cls,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    hidden_out, (all_hidden, all_attn) = scanned(**layer_kwargs, name="layer")(hidden, attention_mask, *flags)
    hidden_states = None
    if output_hidden_states:
      hidden_states = (hidden,) + tuple(all_hidden[i] for i in range(num_layers))
    attentions = tuple(all_attn[i] for i in range(num_layers)) if output_attentions else None
    return hidden_out, hidden_states, attentions

  hidden_states = (hidden,) if output_hidden_states else None
  attentions = () if output_attentions else None
  # Unrolled layers live under a parent named `layer` so that paths read layer/0/..., as in
  # Hugging Face's former Flax classes.
  layers = _LayerList(layer_cls=cls, num_layers=num_layers, layer_kwargs=layer_kwargs, name="layer")
  for i in range(num_layers):
    hidden, (_, attn) = layers(i, hidden, attention_mask, *flags)
    if output_hidden_states:
      hidden_states += (hidden,)
    if output_attentions:
      attentions += (attn,)
  return hidden, hidden_states, attentions


# Logical axes of every layer's input and output, [batch, length, hidden]. Under a trainer's
# flax.linen.logical_axis_rules and mesh (train.make_train_step sets both) the rows stay on the
# batch axes and the hidden dimension whole: FSDP then gathers each weight for its product
# instead of splitting activations along the hidden dimension that its weights are sharded by
# (measured on v5e-16, BERT-base teacher and DistilBERT student: see BENCHMARKS.md). Without
# rules, as in plain model.apply, it does nothing.
ACTIVATION_AXES = ("batch", "activation_length", "activation_embed")


def constrain_activation(hidden: Array) -> Array:
  """hidden [batch, length, hidden], placed as ACTIVATION_AXES say where rules are set."""
  return nn.with_logical_constraint(hidden, ACTIVATION_AXES)


class _LayerList(nn.Module):
  layer_cls: Any
  num_layers: int
  layer_kwargs: dict

  def setup(self):
    self.layers = [self.layer_cls(**self.layer_kwargs, name=str(i)) for i in range(self.num_layers)]

  def __call__(self, i, hidden, attention_mask, deterministic, output_attentions, output_hidden_states):
    return self.layers[i](hidden, attention_mask, deterministic, output_attentions, output_hidden_states)
