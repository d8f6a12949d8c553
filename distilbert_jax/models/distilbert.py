"""DistilBERT (Sanh et al., 2019) as Flax Linen modules, numerically equal to transformers'.

Parameter paths follow Hugging Face's former `FlaxDistilBert*` classes, e.g.
`distilbert/transformer/layer/0/attention/q_lin/kernel`, so their `flax_model.msgpack` files
load unchanged. Heads: masked LM, sequence classification, multiple choice, token
classification, question answering.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from distilbert_jax.models import layers
from distilbert_jax.models.layers import ModelOutput

# Hugging Face hard-codes this epsilon for every DistilBERT LayerNorm (it is not in config.json).
LAYER_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class DistilBertConfig:
  """Every `DistilBertConfig` field that changes the math, plus how we compile the stack."""
  vocab_size: int = 30522
  max_position_embeddings: int = 512
  sinusoidal_pos_embds: bool = False
  n_layers: int = 6
  n_heads: int = 12
  dim: int = 768
  hidden_dim: int = 3072
  dropout: float = 0.1
  attention_dropout: float = 0.1
  activation: str = "gelu"
  initializer_range: float = 0.02
  qa_dropout: float = 0.1
  seq_classif_dropout: float = 0.2
  pad_token_id: int = 0
  tie_word_embeddings: bool = True
  id2label: Optional[tuple] = None  # label names; None means two generic labels
  # Not Hugging Face fields: how the encoder is compiled (saved only in our Flax directories).
  scan_layers: bool = False  # one nn.scan over layers: compile time independent of depth
  remat_policy: str = "none"  # "none" | "full" | "dots": nn.remat per layer
  attention_impl: str = "xla"  # "xla" | "dot_product" (jax.nn.dot_product_attention, cuDNN on GPU)

  model_type = "distilbert"

  # Uniform names that the trainer and converter use for both architectures.
  @property
  def hidden_size(self) -> int:
    return self.dim

  @property
  def num_hidden_layers(self) -> int:
    return self.n_layers

  @property
  def num_labels(self) -> int:
    return len(self.id2label) if self.id2label else 2

  @property
  def type_vocab_size(self) -> int:
    return 0

  @classmethod
  def from_hf_dict(cls, d: dict) -> "DistilBertConfig":
    return layers.config_from_hf_dict(cls, d)

  def to_hf_dict(self) -> dict:
    return layers.config_to_hf_dict(self)


class Embeddings(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    self.word_embeddings = nn.Embed(
        c.vocab_size, c.dim, dtype=self.dtype, param_dtype=self.param_dtype,
        embedding_init=layers.normal_init(c.initializer_range, ("vocab", "embed")),
    )
    if not c.sinusoidal_pos_embds:
      self.position_embeddings = nn.Embed(
          c.max_position_embeddings, c.dim, dtype=self.dtype, param_dtype=self.param_dtype,
          embedding_init=layers.normal_init(c.initializer_range, ("position", "embed")),
      )
    self.LayerNorm = layers.layer_norm(LAYER_NORM_EPS, self.dtype, self.param_dtype, "LayerNorm")
    self.dropout = nn.Dropout(c.dropout)

  def __call__(self, input_ids, position_ids, deterministic: bool):
    """input_ids, position_ids: [batch, length] -> [batch, length, dim]."""
    words = layers.embed_tokens(self.word_embeddings, input_ids, self.config.pad_token_id)
    if self.config.sinusoidal_pos_embds:
      # A constant, as in HF Flax; PyTorch stores the same table frozen (requires_grad=False).
      table = layers.sinusoidal_position_table(self.config.max_position_embeddings, self.config.dim)
      positions = jnp.asarray(table, self.dtype)[position_ids]
    else:
      positions = self.position_embeddings(position_ids)
    hidden = self.LayerNorm(words + positions)
    return self.dropout(hidden, deterministic=deterministic)


class MultiHeadSelfAttention(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool, output_attentions: bool):
    c = self.config
    proj = lambda name: layers.dense(c.dim, ("embed", "heads"), c, self.dtype, self.param_dtype, name)
    q, k, v = (layers.split_heads(proj(n)(hidden), c.n_heads) for n in ("q_lin", "k_lin", "v_lin"))
    context, probs = layers.multi_head_attention(
        self, q, k, v, attention_mask, dropout_rate=c.attention_dropout, deterministic=deterministic,
        implementation=c.attention_impl, output_attentions=output_attentions,
    )
    out = layers.dense(c.dim, ("heads", "embed"), c, self.dtype, self.param_dtype, "out_lin")(context)
    return out, probs


class FFN(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, deterministic: bool):
    c = self.config
    x = layers.dense(c.hidden_dim, ("embed", "mlp"), c, self.dtype, self.param_dtype, "lin1")(hidden)
    x = layers.get_activation(c.activation)(x)
    x = layers.dense(c.dim, ("mlp", "embed"), c, self.dtype, self.param_dtype, "lin2")(x)
    return nn.Dropout(c.dropout)(x, deterministic=deterministic)


class TransformerBlock(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic, output_attentions, output_hidden_states):
    """hidden: [batch, length, dim] -> (hidden, (hidden or None, probs or None))."""
    kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype)
    sa_output, probs = MultiHeadSelfAttention(**kw, name="attention")(
        hidden, attention_mask, deterministic, output_attentions)
    norm = lambda name: layers.layer_norm(LAYER_NORM_EPS, self.dtype, self.param_dtype, name)
    sa_output = norm("sa_layer_norm")(sa_output + hidden)
    ffn_output = FFN(**kw, name="ffn")(sa_output, deterministic)
    out = norm("output_layer_norm")(ffn_output + sa_output)
    return out, (out if output_hidden_states else None, probs)


class Transformer(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic, output_attentions, output_hidden_states):
    c = self.config
    return layers.run_encoder_stack(
        self, TransformerBlock, c.n_layers, hidden, attention_mask,
        deterministic=deterministic, output_attentions=output_attentions,
        output_hidden_states=output_hidden_states, scan_layers=c.scan_layers,
        remat_policy=c.remat_policy,
        layer_kwargs=dict(config=c, dtype=self.dtype, param_dtype=self.param_dtype),
    )


class DistilBertModel(nn.Module):
  """The base model: embeddings and transformer, no pooler. Parameters at the top level."""
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype)
    self.embeddings = Embeddings(**kw)
    self.transformer = Transformer(**kw)

  def __call__(
      self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
      output_attentions: bool = False, output_hidden_states: bool = False,
  ) -> ModelOutput:
    """input_ids, attention_mask (1 = token, 0 = pad), position_ids: [batch, length]."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    hidden = self.embeddings(input_ids, position_ids, deterministic)
    hidden, hidden_states, attentions = self.transformer(
        hidden, attention_mask, deterministic, output_attentions, output_hidden_states)
    return ModelOutput(last_hidden_state=hidden, hidden_states=hidden_states, attentions=attentions)

  def word_embedding_matrix(self):
    """[vocab, dim]: the input embedding table, which tied output projections reuse."""
    return self.embeddings.word_embeddings.embedding


def _base(module) -> DistilBertModel:
  return DistilBertModel(module.config, dtype=module.dtype, param_dtype=module.param_dtype, name="distilbert")


def _gather_positions(hidden, masked_positions):
  """hidden [batch, length, dim], masked_positions [batch, n] -> [batch, n, dim]."""
  if masked_positions is None:
    return hidden
  return jnp.take_along_axis(hidden, masked_positions[..., None].astype(jnp.int32), axis=1)


class DistilBertForMaskedLM(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    self.distilbert = _base(self)
    self.vocab_transform = layers.dense(c.dim, ("embed", "embed_out"), c, self.dtype, self.param_dtype, "vocab_transform")
    self.vocab_layer_norm = layers.layer_norm(LAYER_NORM_EPS, self.dtype, self.param_dtype, "vocab_layer_norm")
    if c.tie_word_embeddings:
      self.vocab_projector = layers.OutputBias(c.vocab_size, self.param_dtype)
    else:
      self.vocab_projector = layers.dense(c.vocab_size, ("embed", "vocab"), c, self.dtype, self.param_dtype, "vocab_projector")

  def __call__(self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
               output_attentions: bool = False, output_hidden_states: bool = False, masked_positions=None):
    """logits: [batch, length, vocab], or [batch, n, vocab] at masked_positions [batch, n]
    (the vocabulary projection is then computed only where a loss needs it)."""
    out = self.distilbert(input_ids, attention_mask, position_ids, deterministic, output_attentions, output_hidden_states)
    x = _gather_positions(out.last_hidden_state, masked_positions)
    x = self.vocab_transform(x)
    x = layers.get_activation(self.config.activation)(x)
    x = self.vocab_layer_norm(x)
    if self.config.tie_word_embeddings:
      logits = self.vocab_projector(x, self.distilbert.word_embedding_matrix())
    else:
      logits = self.vocab_projector(x)
    return out.replace(logits=logits)


class DistilBertForSequenceClassification(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
               output_attentions: bool = False, output_hidden_states: bool = False):
    """logits: [batch, num_labels], from the first token ([CLS]) as Hugging Face does."""
    c = self.config
    out = _base(self)(input_ids, attention_mask, position_ids, deterministic, output_attentions, output_hidden_states)
    pooled = out.last_hidden_state[:, 0]
    pooled = layers.dense(c.dim, ("embed", "embed_out"), c, self.dtype, self.param_dtype, "pre_classifier")(pooled)
    pooled = nn.Dropout(c.seq_classif_dropout)(jax.nn.relu(pooled), deterministic=deterministic)
    logits = layers.dense(c.num_labels, ("embed", "classes"), c, self.dtype, self.param_dtype, "classifier")(pooled)
    return out.replace(logits=logits)


class DistilBertForMultipleChoice(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
               output_attentions: bool = False, output_hidden_states: bool = False):
    """input_ids: [batch, num_choices, length] -> logits [batch, num_choices]."""
    batch, num_choices, length = input_ids.shape
    flat = lambda x: None if x is None else x.reshape(batch * num_choices, length)
    c = self.config
    base = _base(self)(flat(input_ids), flat(attention_mask), flat(position_ids), deterministic, output_attentions, output_hidden_states)
    pooled = base.last_hidden_state[:, 0]
    pooled = layers.dense(c.dim, ("embed", "embed_out"), c, self.dtype, self.param_dtype, "pre_classifier")(pooled)
    pooled = nn.Dropout(c.seq_classif_dropout)(jax.nn.relu(pooled), deterministic=deterministic)
    logits = layers.dense(1, ("embed", "classes"), c, self.dtype, self.param_dtype, "classifier")(pooled)
    return base.replace(logits=logits.reshape(batch, num_choices))


class DistilBertForTokenClassification(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
               output_attentions: bool = False, output_hidden_states: bool = False):
    """logits: [batch, length, num_labels]."""
    c = self.config
    out = _base(self)(input_ids, attention_mask, position_ids, deterministic, output_attentions, output_hidden_states)
    x = nn.Dropout(c.dropout)(out.last_hidden_state, deterministic=deterministic)
    logits = layers.dense(c.num_labels, ("embed", "classes"), c, self.dtype, self.param_dtype, "classifier")(x)
    return out.replace(logits=logits)


class DistilBertForQuestionAnswering(nn.Module):
  config: DistilBertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
               output_attentions: bool = False, output_hidden_states: bool = False):
    """start_logits, end_logits: [batch, length]."""
    c = self.config
    out = _base(self)(input_ids, attention_mask, position_ids, deterministic, output_attentions, output_hidden_states)
    x = nn.Dropout(c.qa_dropout)(out.last_hidden_state, deterministic=deterministic)
    logits = layers.dense(2, ("embed", "classes"), c, self.dtype, self.param_dtype, "qa_outputs")(x)
    return out.replace(start_logits=logits[..., 0], end_logits=logits[..., 1])


HEADS = {
    "base": DistilBertModel,
    "masked_lm": DistilBertForMaskedLM,
    "sequence_classification": DistilBertForSequenceClassification,
    "multiple_choice": DistilBertForMultipleChoice,
    "token_classification": DistilBertForTokenClassification,
    "question_answering": DistilBertForQuestionAnswering,
}
