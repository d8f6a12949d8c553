"""BERT (Devlin et al., 2019) as Flax Linen modules, numerically equal to transformers'.

The teacher of DistilBERT. Parameter paths follow Hugging Face's former `FlaxBert*` classes,
e.g. `bert/encoder/layer/0/attention/self/query/kernel`, so their `flax_model.msgpack` files
load unchanged. Heads: masked LM (decoder tied to the word embeddings), pretraining (MLM and
next-sentence), sequence classification, multiple choice, token classification, question
answering.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from distilbert_jax.models import hf_config, layers
from distilbert_jax.models.attention import multi_head_attention, split_heads
from distilbert_jax.models.encoder_stack import run_encoder_stack
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
  # "xla" | "dot_product" (jax.nn.dot_product_attention, cuDNN on GPU) | "blocked" (attention.blocked_attention)
  attention_impl: str = "xla"

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
    return hf_config.config_from_hf_dict(cls, d)

  def to_hf_dict(self) -> dict:
    return hf_config.config_to_hf_dict(self)


class BertEmbeddings(layers.Module):
  def setup(self):
    c = self.config
    self.word_embeddings = self.embed(c.vocab_size, ("vocab", "embed"))
    self.position_embeddings = self.embed(c.max_position_embeddings, ("position", "embed"))
    self.token_type_embeddings = self.embed(c.type_vocab_size, ("type", "embed"))
    self.LayerNorm = self.layer_norm()
    self.dropout = nn.Dropout(c.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
    """input_ids, token_type_ids, position_ids: [batch, length] -> [batch, length, hidden]."""
    hidden = (layers.embed_tokens(self.word_embeddings, input_ids, self.config.pad_token_id)
              + self.position_embeddings(position_ids)
              + self.token_type_embeddings(token_type_ids))
    return self.dropout(self.LayerNorm(hidden), deterministic=deterministic)


class BertSelfAttention(layers.Module):
  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool, output_attentions: bool, output_qkv: bool):
    """-> (context [batch, length, hidden], probabilities or None, (query, key, value) or None)."""
    c = self.config
    q, k, v = (split_heads(self.dense(c.hidden_size, ("embed", "heads"), n)(hidden), c.num_attention_heads)
               for n in ("query", "key", "value"))
    context, probs = multi_head_attention(
        self, q, k, v, attention_mask, dropout_rate=c.attention_probs_dropout_prob,
        deterministic=deterministic, implementation=c.attention_impl, output_attentions=output_attentions)
    return context, probs, ((q, k, v) if output_qkv else None)


class BertResidualOutput(layers.Module):
  """dense -> dropout -> LayerNorm(x + residual): HF's BertSelfOutput and BertOutput."""
  in_axis: str = "heads"

  @nn.compact
  def __call__(self, x, residual, deterministic: bool):
    x = self.dense(self.config.hidden_size, (self.in_axis, "embed"), "dense")(x)
    x = nn.Dropout(self.config.hidden_dropout_prob)(x, deterministic=deterministic)
    return self.layer_norm("LayerNorm")(x + residual)


class BertAttention(layers.Module):
  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool, output_attentions: bool, output_qkv: bool):
    context, probs, qkv = BertSelfAttention(**self.kw, name="self")(
        hidden, attention_mask, deterministic, output_attentions, output_qkv)
    return BertResidualOutput(**self.kw, in_axis="heads", name="output")(context, hidden, deterministic), probs, qkv


class BertLayer(layers.Module):
  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic, output_attentions, output_hidden_states, output_qkv):
    """hidden: [batch, length, hidden] -> (hidden, (hidden or None, probs or None, qkv or None))."""
    c = self.config
    hidden = layers.constrain_activation(hidden)
    attention = BertAttention(**self.kw, name="attention")
    attn_out, probs, qkv = attention(hidden, attention_mask, deterministic, output_attentions, output_qkv)
    x = _DenseScope(**self.kw, features=c.intermediate_size, axes=("embed", "mlp"), activation=c.hidden_act,
                    name="intermediate")(attn_out)
    out = layers.constrain_activation(
        BertResidualOutput(**self.kw, in_axis="mlp", name="output")(x, attn_out, deterministic))
    return out, (out if output_hidden_states else None, probs, qkv)


class _DenseScope(layers.Module):
  """A scope holding one `dense` then an activation: HF's `intermediate` and `pooler`."""
  features: int = 0
  axes: tuple = ("embed", "embed_out")
  activation: str = "tanh"

  @nn.compact
  def __call__(self, x):
    return layers.get_activation(self.activation)(self.dense(self.features, self.axes, "dense")(x))


class BertEncoder(layers.Module):
  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic, output_attentions, output_hidden_states, output_qkv):
    c = self.config
    return run_encoder_stack(
        self, BertLayer, c.num_hidden_layers, hidden, attention_mask,
        deterministic=deterministic, output_attentions=output_attentions,
        output_hidden_states=output_hidden_states, output_qkv=output_qkv, scan_layers=c.scan_layers,
        remat_policy=c.remat_policy, layer_kwargs=self.kw)


class BertModel(layers.Module):
  """Embeddings, encoder and (optionally) the pooler. Parameters at the top level."""
  add_pooling_layer: bool = True

  def setup(self):
    self.embeddings = BertEmbeddings(**self.kw)
    self.encoder = BertEncoder(**self.kw)
    if self.add_pooling_layer:
      self.pooler = _DenseScope(**self.kw, features=self.config.hidden_size)

  def __call__(
      self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
      deterministic: bool = True, output_attentions: bool = False, output_hidden_states: bool = False,
      output_qkv: bool = False,
  ) -> ModelOutput:
    """input_ids, attention_mask (1 = token, 0 = pad), token_type_ids, position_ids: [batch, length]."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if position_ids is None:
      layers.check_length(input_ids.shape[-1], self.config)
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    hidden = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    hidden, hidden_states, attentions, qkv = self.encoder(
        hidden, attention_mask, deterministic, output_attentions, output_hidden_states, output_qkv)
    pooled = self.pooler(hidden[:, 0]) if self.add_pooling_layer else None
    return ModelOutput(last_hidden_state=hidden, pooler_output=pooled, hidden_states=hidden_states,
                       attentions=attentions, attention_qkv=qkv)

  def word_embedding_matrix(self):
    """[vocab, hidden]: the input embedding table, which tied output projections reuse."""
    return self.embeddings.word_embeddings.embedding


class BertLMPredictionHead(layers.VocabProjection):
  """cls/predictions: transform (dense, activation, LayerNorm), then the decoder (tied to the
  word embeddings unless config.tie_word_embeddings is false) and the bias."""
  decoder: Optional[str] = "decoder"

  @nn.compact
  def __call__(self, hidden, embedding):
    """hidden [..., hidden], embedding [vocab, hidden] -> logits [..., vocab]."""
    return self.project(_Transform(**self.kw, name="transform")(hidden), embedding)


class _Transform(layers.Module):
  @nn.compact
  def __call__(self, x):
    x = self.dense(self.config.hidden_size, ("embed", "embed_out"), "dense")(x)
    return self.layer_norm("LayerNorm")(layers.get_activation(self.config.hidden_act)(x))


class _BertHead(layers.Module):
  """A head: BertModel under `bert`, then the head's own layers (`head`) on its output.

  Every head takes BertModel's inputs, [batch, length] ([batch, num_choices, length] for multiple
  choice), and the masked-LM heads also `masked_positions` (see layers.gather_positions).
  """
  # Class attributes, not fields: what kind of head a subclass is.
  add_pooling_layer = True
  multiple_choice = False
  takes_masked_positions = False

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
               deterministic: bool = True, output_attentions: bool = False,
               output_hidden_states: bool = False, masked_positions=None, output_qkv: bool = False) -> ModelOutput:
    if masked_positions is not None and not self.takes_masked_positions:
      raise ValueError(f"{type(self).__name__} takes no masked_positions")
    inputs = (input_ids, attention_mask, token_type_ids, position_ids)
    if self.multiple_choice:  # every choice is a sequence of its own
      inputs = tuple(None if x is None else x.reshape(-1, x.shape[-1]) for x in inputs)
    bert = BertModel(**self.kw, add_pooling_layer=self.add_pooling_layer, name="bert")
    out = bert(*inputs, deterministic, output_attentions, output_hidden_states, output_qkv)
    out = self.head(bert, out, deterministic, masked_positions)
    if self.multiple_choice:
      out = out.replace(logits=out.logits.reshape(input_ids.shape[:2]))
    return out

  def head(self, bert: BertModel, out: ModelOutput, deterministic: bool, masked_positions) -> ModelOutput:
    raise NotImplementedError


class BertForMaskedLM(_BertHead):
  """logits [batch, length, vocab]; at masked_positions [batch, n] -> [batch, n, vocab], at flat
  masked_positions [n] -> [n, vocab] (the vocabulary projection is then computed only there)."""
  add_pooling_layer = False
  takes_masked_positions = True
  next_sentence = False

  def head(self, bert, out, deterministic, masked_positions):
    hidden = layers.gather_positions(out.last_hidden_state, masked_positions)
    logits, nsp = _Cls(**self.kw, next_sentence=self.next_sentence, name="cls")(
        hidden, out.pooler_output, bert.word_embedding_matrix())
    return out.replace(logits=logits, seq_relationship_logits=nsp)


class _Cls(layers.Module):
  """The `cls` scope of Hugging Face's MLM and pretraining heads."""
  next_sentence: bool = False

  @nn.compact
  def __call__(self, hidden, pooled, embedding):
    logits = BertLMPredictionHead(**self.kw, name="predictions")(hidden, embedding)
    nsp = self.dense(2, ("embed", "classes"), "seq_relationship")(pooled) if self.next_sentence else None
    return logits, nsp


class BertForPreTraining(BertForMaskedLM):
  """Masked LM plus next-sentence prediction (`seq_relationship_logits` [batch, 2], from the
  pooled [CLS] state). The MLM logits answer to transformers' name `prediction_logits` too."""
  add_pooling_layer = True
  next_sentence = True


class BertForSequenceClassification(_BertHead):
  """logits: [batch, num_labels] from the pooled [CLS] state."""

  def head(self, bert, out, deterministic, masked_positions):
    x = nn.Dropout(_classifier_dropout(self.config))(out.pooler_output, deterministic=deterministic)
    return out.replace(logits=self.dense(self.config.num_labels, ("embed", "classes"), "classifier")(x))


class BertForMultipleChoice(_BertHead):
  """input_ids: [batch, num_choices, length] -> logits [batch, num_choices]."""
  multiple_choice = True

  def head(self, bert, out, deterministic, masked_positions):
    x = nn.Dropout(_classifier_dropout(self.config))(out.pooler_output, deterministic=deterministic)
    return out.replace(logits=self.dense(1, ("embed", "classes"), "classifier")(x))


class BertForTokenClassification(_BertHead):
  """logits: [batch, length, num_labels]."""
  add_pooling_layer = False

  def head(self, bert, out, deterministic, masked_positions):
    x = nn.Dropout(_classifier_dropout(self.config))(out.last_hidden_state, deterministic=deterministic)
    return out.replace(logits=self.dense(self.config.num_labels, ("embed", "classes"), "classifier")(x))


class BertForQuestionAnswering(_BertHead):
  """start_logits, end_logits: [batch, length]."""
  add_pooling_layer = False

  def head(self, bert, out, deterministic, masked_positions):
    logits = self.dense(2, ("embed", "classes"), "qa_outputs")(out.last_hidden_state)
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
