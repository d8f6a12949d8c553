"""BERT (Devlin et al., 2019) as Flax Linen modules, numerically equal to transformers'.

The teacher of DistilBERT. Parameter paths follow Hugging Face's former `FlaxBert*` classes,
e.g. `bert/encoder/layer/0/attention/self/query/kernel`, so their `flax_model.msgpack` files
load unchanged. Heads: masked LM (decoder tied to the word embeddings), pretraining (MLM and
next-sentence), sequence classification, multiple choice, token classification, question
answering.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from distilbert_jax.models import layers
from distilbert_jax.models.layers import ModelOutput


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Every `BertConfig` field that changes the math, plus how we compile the stack."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  classifier_dropout: Optional[float] = None  # None: hidden_dropout_prob, as Hugging Face
  tie_word_embeddings: bool = True
  id2label: Optional[tuple] = None  # label names; None means two generic labels
  # Not Hugging Face fields: how the encoder is compiled (saved only in our Flax directories).
  scan_layers: bool = False  # one nn.scan over layers: compile time independent of depth
  remat_policy: str = "none"  # "none" | "full" | "dots": nn.remat per layer
  attention_impl: str = "xla"  # "xla" | "dot_product" (jax.nn.dot_product_attention, cuDNN on GPU)

  model_type = "bert"

  @property
  def num_labels(self) -> int:
    return len(self.id2label) if self.id2label else 2

  @classmethod
  def from_hf_dict(cls, d: dict) -> "BertConfig":
    kind = d.get("position_embedding_type", "absolute")
    if kind != "absolute":
      raise ValueError(f"position_embedding_type {kind!r} is not supported (only 'absolute')")
    if d.get("is_decoder") or d.get("add_cross_attention"):
      raise ValueError("BERT as a decoder (is_decoder / add_cross_attention) is not supported")
    return layers.config_from_hf_dict(cls, d)

  def to_hf_dict(self) -> dict:
    return layers.config_to_hf_dict(self)


class BertEmbeddings(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    embed = lambda rows, names: nn.Embed(
        rows, c.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
        embedding_init=layers.normal_init(c.initializer_range, names))
    self.word_embeddings = embed(c.vocab_size, ("vocab", "embed"))
    self.position_embeddings = embed(c.max_position_embeddings, ("position", "embed"))
    self.token_type_embeddings = embed(c.type_vocab_size, ("type", "embed"))
    self.LayerNorm = layers.layer_norm(c.layer_norm_eps, self.dtype, self.param_dtype, "LayerNorm")
    self.dropout = nn.Dropout(c.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
    """input_ids, token_type_ids, position_ids: [batch, length] -> [batch, length, hidden]."""
    hidden = (layers.embed_tokens(self.word_embeddings, input_ids, self.config.pad_token_id)
              + self.position_embeddings(position_ids)
              + self.token_type_embeddings(token_type_ids))
    return self.dropout(self.LayerNorm(hidden), deterministic=deterministic)


class BertSelfAttention(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool, output_attentions: bool):
    c = self.config
    proj = lambda name: layers.dense(c.hidden_size, ("embed", "heads"), c, self.dtype, self.param_dtype, name)
    q, k, v = (layers.split_heads(proj(n)(hidden), c.num_attention_heads) for n in ("query", "key", "value"))
    return layers.multi_head_attention(
        self, q, k, v, attention_mask, dropout_rate=c.attention_probs_dropout_prob,
        deterministic=deterministic, implementation=c.attention_impl, output_attentions=output_attentions)


class BertResidualOutput(nn.Module):
  """dense -> dropout -> LayerNorm(x + residual): HF's BertSelfOutput and BertOutput."""
  config: BertConfig
  in_axis: str
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, residual, deterministic: bool):
    c = self.config
    x = layers.dense(c.hidden_size, (self.in_axis, "embed"), c, self.dtype, self.param_dtype, "dense")(x)
    x = nn.Dropout(c.hidden_dropout_prob)(x, deterministic=deterministic)
    return layers.layer_norm(c.layer_norm_eps, self.dtype, self.param_dtype, "LayerNorm")(x + residual)


class BertAttention(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool, output_attentions: bool):
    kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype)
    context, probs = BertSelfAttention(**kw, name="self")(hidden, attention_mask, deterministic, output_attentions)
    return BertResidualOutput(**kw, in_axis="heads", name="output")(context, hidden, deterministic), probs


class BertLayer(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic, output_attentions, output_hidden_states):
    """hidden: [batch, length, hidden] -> (hidden, (hidden or None, probs or None))."""
    c = self.config
    kw = dict(config=c, dtype=self.dtype, param_dtype=self.param_dtype)
    attn_out, probs = BertAttention(**kw, name="attention")(hidden, attention_mask, deterministic, output_attentions)
    x = _DenseScope(c, c.intermediate_size, ("embed", "mlp"), c.hidden_act, self.dtype, self.param_dtype,
                    name="intermediate")(attn_out)
    out = BertResidualOutput(**kw, in_axis="mlp", name="output")(x, attn_out, deterministic)
    return out, (out if output_hidden_states else None, probs)


class _DenseScope(nn.Module):
  """A scope holding one `dense` then an activation: HF's `intermediate` and `pooler`."""
  config: BertConfig
  features: int
  names: tuple
  activation: str
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = layers.dense(self.features, self.names, self.config, self.dtype, self.param_dtype, "dense")(x)
    return layers.get_activation(self.activation)(x)


class BertEncoder(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic, output_attentions, output_hidden_states):
    c = self.config
    return layers.run_encoder_stack(
        self, BertLayer, c.num_hidden_layers, hidden, attention_mask,
        deterministic=deterministic, output_attentions=output_attentions,
        output_hidden_states=output_hidden_states, scan_layers=c.scan_layers,
        remat_policy=c.remat_policy,
        layer_kwargs=dict(config=c, dtype=self.dtype, param_dtype=self.param_dtype))


class BertModel(nn.Module):
  """Embeddings, encoder and (optionally) the pooler. Parameters at the top level."""
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  add_pooling_layer: bool = True

  def setup(self):
    kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype)
    self.embeddings = BertEmbeddings(**kw)
    self.encoder = BertEncoder(**kw)
    if self.add_pooling_layer:
      c = self.config
      self.pooler = _DenseScope(c, c.hidden_size, ("embed", "embed_out"), "tanh", self.dtype, self.param_dtype)

  def __call__(
      self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
      deterministic: bool = True, output_attentions: bool = False, output_hidden_states: bool = False,
  ) -> ModelOutput:
    """input_ids, attention_mask (1 = token, 0 = pad), token_type_ids, position_ids: [batch, length]."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    hidden = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    hidden, hidden_states, attentions = self.encoder(
        hidden, attention_mask, deterministic, output_attentions, output_hidden_states)
    pooled = self.pooler(hidden[:, 0]) if self.add_pooling_layer else None
    return ModelOutput(last_hidden_state=hidden, pooler_output=pooled, hidden_states=hidden_states,
                       attentions=attentions)

  def word_embedding_matrix(self):
    """[vocab, hidden]: the input embedding table, which tied output projections reuse."""
    return self.embeddings.word_embeddings.embedding


class BertLMPredictionHead(nn.Module):
  """cls/predictions: transform (dense, activation, LayerNorm), then the tied decoder + bias."""
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, bert: BertModel):
    c = self.config
    transform = _Transform(c, self.dtype, self.param_dtype, name="transform")
    x = transform(hidden)
    bias = self.param("bias", layers.zeros_init(("vocab",)), (c.vocab_size,), self.param_dtype)
    if c.tie_word_embeddings:
      return layers.tied_projection(x, bert.word_embedding_matrix().astype(x.dtype), bias.astype(x.dtype))
    decoder = nn.Dense(c.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                       kernel_init=layers.normal_init(c.initializer_range, ("embed", "vocab")), name="decoder")
    logits = decoder(x)
    return logits + bias.astype(logits.dtype)


class _Transform(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = self.config
    x = layers.dense(c.hidden_size, ("embed", "embed_out"), c, self.dtype, self.param_dtype, "dense")(x)
    x = layers.get_activation(c.hidden_act)(x)
    return layers.layer_norm(c.layer_norm_eps, self.dtype, self.param_dtype, "LayerNorm")(x)


class _Cls(nn.Module):
  """The `cls` scope of Hugging Face's MLM and pretraining heads."""
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  next_sentence: bool = False

  @nn.compact
  def __call__(self, hidden, pooled, bert):
    c = self.config
    logits = BertLMPredictionHead(c, self.dtype, self.param_dtype, name="predictions")(hidden, bert)
    if not self.next_sentence:
      return logits, None
    nsp = layers.dense(2, ("embed", "classes"), c, self.dtype, self.param_dtype, "seq_relationship")(pooled)
    return logits, nsp


def _base(module, add_pooling_layer: bool) -> BertModel:
  return BertModel(module.config, dtype=module.dtype, param_dtype=module.param_dtype,
                   add_pooling_layer=add_pooling_layer, name="bert")


class BertForMaskedLM(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  next_sentence: bool = False  # BertForPreTraining sets this

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
               deterministic: bool = True, output_attentions: bool = False,
               output_hidden_states: bool = False, masked_positions=None):
    """logits: [batch, length, vocab], or [batch, n, vocab] at masked_positions [batch, n]
    (the vocabulary projection is then computed only where a loss needs it)."""
    bert = _base(self, add_pooling_layer=self.next_sentence)
    out = bert(input_ids, attention_mask, token_type_ids, position_ids, deterministic,
               output_attentions, output_hidden_states)
    hidden = out.last_hidden_state
    if masked_positions is not None:
      hidden = jnp.take_along_axis(hidden, masked_positions[..., None].astype(jnp.int32), axis=1)
    logits, nsp = _Cls(self.config, self.dtype, self.param_dtype, self.next_sentence, name="cls")(
        hidden, out.pooler_output, bert)
    return out.replace(logits=logits, seq_relationship_logits=nsp)


class BertForPreTraining(BertForMaskedLM):
  """Masked LM plus next-sentence prediction (`seq_relationship_logits` [batch, 2])."""
  next_sentence: bool = True


class BertForSequenceClassification(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
               deterministic: bool = True, output_attentions: bool = False, output_hidden_states: bool = False):
    """logits: [batch, num_labels] from the pooled [CLS] state."""
    c = self.config
    out = _base(self, True)(input_ids, attention_mask, token_type_ids, position_ids, deterministic,
                            output_attentions, output_hidden_states)
    x = nn.Dropout(_classifier_dropout(c))(out.pooler_output, deterministic=deterministic)
    logits = layers.dense(c.num_labels, ("embed", "classes"), c, self.dtype, self.param_dtype, "classifier")(x)
    return out.replace(logits=logits)


class BertForMultipleChoice(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
               deterministic: bool = True, output_attentions: bool = False, output_hidden_states: bool = False):
    """input_ids: [batch, num_choices, length] -> logits [batch, num_choices]."""
    c = self.config
    batch, num_choices, length = input_ids.shape
    flat = lambda x: None if x is None else x.reshape(batch * num_choices, length)
    out = _base(self, True)(flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids),
                            deterministic, output_attentions, output_hidden_states)
    x = nn.Dropout(_classifier_dropout(c))(out.pooler_output, deterministic=deterministic)
    logits = layers.dense(1, ("embed", "classes"), c, self.dtype, self.param_dtype, "classifier")(x)
    return out.replace(logits=logits.reshape(batch, num_choices))


class BertForTokenClassification(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
               deterministic: bool = True, output_attentions: bool = False, output_hidden_states: bool = False):
    """logits: [batch, length, num_labels]."""
    c = self.config
    out = _base(self, False)(input_ids, attention_mask, token_type_ids, position_ids, deterministic,
                             output_attentions, output_hidden_states)
    x = nn.Dropout(_classifier_dropout(c))(out.last_hidden_state, deterministic=deterministic)
    logits = layers.dense(c.num_labels, ("embed", "classes"), c, self.dtype, self.param_dtype, "classifier")(x)
    return out.replace(logits=logits)


class BertForQuestionAnswering(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
               deterministic: bool = True, output_attentions: bool = False, output_hidden_states: bool = False):
    """start_logits, end_logits: [batch, length]."""
    c = self.config
    out = _base(self, False)(input_ids, attention_mask, token_type_ids, position_ids, deterministic,
                             output_attentions, output_hidden_states)
    logits = layers.dense(2, ("embed", "classes"), c, self.dtype, self.param_dtype, "qa_outputs")(
        out.last_hidden_state)
    return out.replace(start_logits=logits[..., 0], end_logits=logits[..., 1])


def _classifier_dropout(c: BertConfig) -> float:
  return c.classifier_dropout if c.classifier_dropout is not None else c.hidden_dropout_prob


HEADS = {
    "base": BertModel,
    "masked_lm": BertForMaskedLM,
    "pretraining": BertForPreTraining,
    "sequence_classification": BertForSequenceClassification,
    "multiple_choice": BertForMultipleChoice,
    "token_classification": BertForTokenClassification,
    "question_answering": BertForQuestionAnswering,
}
