"""Pieces shared by the BERT and DistilBERT encoders: activations, outputs, init, embeddings,
the vocabulary projection and the activation sharding constraints.

Both architectures are the same post-LayerNorm transformer (Vaswani et al., 2017; Devlin et al.,
2019); they differ in parameter names and in where dropout sits, so each architecture file keeps
its own layer modules. Those derive from `Module` (config, dtype, param_dtype and the dense,
LayerNorm and embedding builders) and share the gather at masked positions and the vocabulary
projection here, the attention core in attention.py, the layer stack in encoder_stack.py, the
matrix products in matmul.py and the config.json conversion in hf_config.py. The names callers
use from those modules are re-exported here, so `layers.X` keeps naming them.

Logical axis names carried by every parameter (mapped onto mesh axes by `sharding.py`):
  vocab: vocabulary rows; embed: the model (hidden) dimension; heads: the flattened
  heads * head_dim dimension of the query/key/value projections; mlp: the feed-forward inner
  dimension; position, type: rows of the position and token-type tables; classes: head outputs;
  layers: the stacked layer axis when the encoder is scanned.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax.models.attention import (ATTENTION_IMPLEMENTATIONS, blocked_attention,
                                             multi_head_attention, split_heads)
from distilbert_jax.models.encoder_stack import REMAT_POLICIES, run_encoder_stack
from distilbert_jax.models.hf_config import (COMPILE_FIELDS, DEFAULT_LABELS, config_from_hf_dict,
                                             config_to_hf_dict)
from distilbert_jax.models.matmul import (DENSE_OUTPUT, accumulation_dtype, dot_general, einsum,
                                          tied_projection)

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
  attention_qkv: tuple of num_layers (query, key, value) triples, each [batch, length, heads,
    head_dim] (after the projections, before the scores; the relation losses' inputs), with
    output_qkv=True
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
  attention_qkv: Optional[tuple] = None
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


@functools.lru_cache(maxsize=8)
def sinusoidal_position_table(num_positions: int, dim: int) -> np.ndarray:
  """[num_positions, dim] float32, bit-identical to transformers' create_sinusoidal_embeddings.
  Cached (the Python loop is slow, and would otherwise run on every trace) and read-only, since
  the cache shares it."""
  position_enc = np.array(
      [[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for pos in range(num_positions)]
  )
  table = np.zeros((num_positions, dim), np.float32)
  table[:, 0::2] = np.sin(position_enc[:, 0::2]).astype(np.float32)
  table[:, 1::2] = np.cos(position_enc[:, 1::2]).astype(np.float32)
  table.flags.writeable = False
  return table


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


__all__ = [
    "ACTIVATIONS", "ACTIVATION_AXES", "Module", "ModelOutput", "VocabProjection", "check_length",
    "constrain_activation", "embed_tokens", "gather_positions", "get_activation", "normal_init",
    "ones_init", "sinusoidal_position_table", "zeros_init",
    # Re-exported from attention.py, encoder_stack.py, hf_config.py and matmul.py.
    "ATTENTION_IMPLEMENTATIONS", "COMPILE_FIELDS", "DEFAULT_LABELS", "DENSE_OUTPUT", "REMAT_POLICIES",
    "accumulation_dtype", "blocked_attention", "config_from_hf_dict", "config_to_hf_dict", "dot_general",
    "einsum", "multi_head_attention", "run_encoder_stack", "split_heads", "tied_projection",
]
