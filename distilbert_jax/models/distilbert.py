"""DistilBERT (Sanh et al., 2019) as Flax Linen modules, numerically equal to transformers'.

Parameter paths follow Hugging Face's former `FlaxDistilBert*` classes, e.g.
`distilbert/transformer/layer/0/attention/q_lin/kernel`, so their `flax_model.msgpack` files
load unchanged. Heads: masked LM, sequence classification, multiple choice, token
classification, question answering.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from distilbert_jax.models import hf_config, layers
from distilbert_jax.models.attention import multi_head_attention, split_heads
from distilbert_jax.models.encoder_stack import run_encoder_stack
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
  # "xla" | "dot_product" (jax.nn.dot_product_attention, cuDNN on GPU) | "blocked" (attention.blocked_attention)
  attention_impl: str = "xla"

  model_type = "distilbert"

  # Uniform names that the trainer and converter use for both architectures.
  @property
  def hidden_size(self) -> int:
    return self.dim

  @property
  def num_hidden_layers(self) -> int:
    return self.n_layers

  @property
  def num_attention_heads(self) -> int:
    return self.n_heads

  @property
  def num_labels(self) -> int:
    return len(self.id2label) if self.id2label else 2

  @property
  def type_vocab_size(self) -> int:
    return 0

  @property
  def layer_norm_eps(self) -> float:
    return LAYER_NORM_EPS

  @classmethod
  def from_hf_dict(cls, d: dict) -> "DistilBertConfig":
    return hf_config.config_from_hf_dict(cls, d)

  def to_hf_dict(self) -> dict:
    return hf_config.config_to_hf_dict(self)


class Embeddings(layers.Module):
  def setup(self):
    c = self.config
    self.word_embeddings = self.embed(c.vocab_size, ("vocab", "embed"))
    if not c.sinusoidal_pos_embds:
      self.position_embeddings = self.embed(c.max_position_embeddings, ("position", "embed"))
    self.LayerNorm = self.layer_norm()
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


class MultiHeadSelfAttention(layers.Module):
  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool, output_attentions: bool, output_qkv: bool):
    """-> (output [batch, length, dim], probabilities or None, (query, key, value) or None)."""
    c = self.config
    q, k, v = (split_heads(self.dense(c.dim, ("embed", "heads"), n)(hidden), c.n_heads)
               for n in ("q_lin", "k_lin", "v_lin"))
    context, probs = multi_head_attention(
        self, q, k, v, attention_mask, dropout_rate=c.attention_dropout, deterministic=deterministic,
        implementation=c.attention_impl, output_attentions=output_attentions,
    )
    return self.dense(c.dim, ("heads", "embed"), "out_lin")(context), probs, ((q, k, v) if output_qkv else None)


class FFN(layers.Module):
  @nn.compact
  def __call__(self, hidden, deterministic: bool):
    c = self.config
    x = layers.get_activation(c.activation)(self.dense(c.hidden_dim, ("embed", "mlp"), "lin1")(hidden))
    x = self.dense(c.dim, ("mlp", "embed"), "lin2")(x)
    return nn.Dropout(c.dropout)(x, deterministic=deterministic)


class TransformerBlock(layers.Module):
  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic, output_attentions, output_hidden_states, output_qkv):
    """hidden: [batch, length, dim] -> (hidden, (hidden or None, probs or None, qkv or None))."""
    hidden = layers.constrain_activation(hidden)
    sa_output, probs, qkv = MultiHeadSelfAttention(**self.kw, name="attention")(
        hidden, attention_mask, deterministic, output_attentions, output_qkv)
    sa_output = self.layer_norm("sa_layer_norm")(sa_output + hidden)
    ffn_output = FFN(**self.kw, name="ffn")(sa_output, deterministic)
    out = layers.constrain_activation(self.layer_norm("output_layer_norm")(ffn_output + sa_output))
    return out, (out if output_hidden_states else None, probs, qkv)


class Transformer(layers.Module):
  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic, output_attentions, output_hidden_states, output_qkv):
    c = self.config
    return run_encoder_stack(
        self, TransformerBlock, c.n_layers, hidden, attention_mask,
        deterministic=deterministic, output_attentions=output_attentions,
        output_hidden_states=output_hidden_states, output_qkv=output_qkv, scan_layers=c.scan_layers,
        remat_policy=c.remat_policy, layer_kwargs=self.kw,
    )


class DistilBertModel(layers.Module):
  """The base model: embeddings and transformer, no pooler. Parameters at the top level."""

  def setup(self):
    self.embeddings = Embeddings(**self.kw)
    self.transformer = Transformer(**self.kw)

  def __call__(
      self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
      output_attentions: bool = False, output_hidden_states: bool = False, output_qkv: bool = False,
  ) -> ModelOutput:
    """input_ids, attention_mask (1 = token, 0 = pad), position_ids: [batch, length]."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if position_ids is None:
      layers.check_length(input_ids.shape[-1], self.config)
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    hidden = self.embeddings(input_ids, position_ids, deterministic)
    hidden, hidden_states, attentions, qkv = self.transformer(
        hidden, attention_mask, deterministic, output_attentions, output_hidden_states, output_qkv)
    return ModelOutput(last_hidden_state=hidden, hidden_states=hidden_states, attentions=attentions,
                       attention_qkv=qkv)

  def word_embedding_matrix(self):
    """[vocab, dim]: the input embedding table, which tied output projections reuse."""
    return self.embeddings.word_embeddings.embedding


class _DistilBertHead(layers.Module):
  """A head: DistilBertModel under `distilbert`, then the head's own layers (`head`) on its output.

  Every head takes DistilBertModel's inputs, [batch, length] ([batch, num_choices, length] for
  multiple choice), and the masked-LM head also `masked_positions` (see layers.gather_positions).
  """
  # Class attributes, not fields: what kind of head a subclass is.
  multiple_choice = False
  takes_masked_positions = False

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
               output_attentions: bool = False, output_hidden_states: bool = False,
               masked_positions=None, output_qkv: bool = False) -> ModelOutput:
    if masked_positions is not None and not self.takes_masked_positions:
      raise ValueError(f"{type(self).__name__} takes no masked_positions")
    inputs = (input_ids, attention_mask, position_ids)
    if self.multiple_choice:  # every choice is a sequence of its own
      inputs = tuple(None if x is None else x.reshape(-1, x.shape[-1]) for x in inputs)
    distilbert = DistilBertModel(**self.kw, name="distilbert")
    out = distilbert(*inputs, deterministic, output_attentions, output_hidden_states, output_qkv)
    out = self.head(distilbert, out, deterministic, masked_positions)
    if self.multiple_choice:
      out = out.replace(logits=out.logits.reshape(input_ids.shape[:2]))
    return out

  def head(self, distilbert: DistilBertModel, out: ModelOutput, deterministic: bool,
           masked_positions) -> ModelOutput:
    raise NotImplementedError

  def classify_first_token(self, out: ModelOutput, num_outputs: int, deterministic: bool):
    """[batch, num_outputs] from the first token ([CLS]), as Hugging Face does."""
    pooled = self.dense(self.config.dim, ("embed", "embed_out"), "pre_classifier")(out.last_hidden_state[:, 0])
    pooled = nn.Dropout(self.config.seq_classif_dropout)(jax.nn.relu(pooled), deterministic=deterministic)
    return self.dense(num_outputs, ("embed", "classes"), "classifier")(pooled)


class DistilBertForMaskedLM(_DistilBertHead):
  """logits [batch, length, vocab]; at masked_positions [batch, n] -> [batch, n, vocab], at flat
  masked_positions [n] -> [n, vocab] (the vocabulary projection is then computed only there)."""
  takes_masked_positions = True

  def head(self, distilbert, out, deterministic, masked_positions):
    x = layers.gather_positions(out.last_hidden_state, masked_positions)
    x = self.dense(self.config.dim, ("embed", "embed_out"), "vocab_transform")(x)
    x = self.layer_norm("vocab_layer_norm")(layers.get_activation(self.config.activation)(x))
    logits = layers.VocabProjection(**self.kw, name="vocab_projector")(x, distilbert.word_embedding_matrix())
    return out.replace(logits=logits)


class DistilBertForSequenceClassification(_DistilBertHead):
  """logits: [batch, num_labels]."""

  def head(self, distilbert, out, deterministic, masked_positions):
    return out.replace(logits=self.classify_first_token(out, self.config.num_labels, deterministic))


class DistilBertForMultipleChoice(_DistilBertHead):
  """input_ids: [batch, num_choices, length] -> logits [batch, num_choices]."""
  multiple_choice = True

  def head(self, distilbert, out, deterministic, masked_positions):
    return out.replace(logits=self.classify_first_token(out, 1, deterministic))


class DistilBertForTokenClassification(_DistilBertHead):
  """logits: [batch, length, num_labels]."""

  def head(self, distilbert, out, deterministic, masked_positions):
    x = nn.Dropout(self.config.dropout)(out.last_hidden_state, deterministic=deterministic)
    return out.replace(logits=self.dense(self.config.num_labels, ("embed", "classes"), "classifier")(x))


class DistilBertForQuestionAnswering(_DistilBertHead):
  """start_logits, end_logits: [batch, length]."""

  def head(self, distilbert, out, deterministic, masked_positions):
    x = nn.Dropout(self.config.qa_dropout)(out.last_hidden_state, deterministic=deterministic)
    logits = self.dense(2, ("embed", "classes"), "qa_outputs")(x)
    return out.replace(start_logits=logits[..., 0], end_logits=logits[..., 1])


HEADS = {
    "base": DistilBertModel,
    "masked_lm": DistilBertForMaskedLM,
    "sequence_classification": DistilBertForSequenceClassification,
    "multiple_choice": DistilBertForMultipleChoice,
    "token_classification": DistilBertForTokenClassification,
    "question_answering": DistilBertForQuestionAnswering,
}
