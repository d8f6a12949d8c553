"""BERT-family encoders as pure Flax Linen modules.

    model = models.get_model(config, head="masked_lm", dtype=jnp.bfloat16)
    variables = model.init(rng, input_ids)            # parameters carry logical axis names
    params = flax.linen.meta.unbox(variables["params"])
    out = model.apply({"params": params}, input_ids, attention_mask=mask, deterministic=True)
"""
from __future__ import annotations

from typing import Any, Union

import jax.numpy as jnp

from distilbert_jax.models import bert, distilbert
from distilbert_jax.models.bert import BertConfig
from distilbert_jax.models.distilbert import DistilBertConfig
from distilbert_jax.models.layers import ModelOutput

ModelConfig = Union[BertConfig, DistilBertConfig]
CONFIGS = {"bert": BertConfig, "distilbert": DistilBertConfig}
HEADS_BY_TYPE = {"bert": bert.HEADS, "distilbert": distilbert.HEADS}
HEAD_NAMES = tuple(bert.HEADS)  # BERT has every head; DistilBERT lacks "pretraining"


def config_from_hf_dict(d: dict) -> ModelConfig:
  """The config dataclass for a Hugging Face config.json dict, chosen by its model_type."""
  model_type = d.get("model_type")
  if model_type not in CONFIGS:
    raise ValueError(f"unknown architecture model_type={model_type!r}; supported: {sorted(CONFIGS)}")
  return CONFIGS[model_type].from_hf_dict(d)


def get_model(config: ModelConfig, head: str = "base", dtype: Any = jnp.float32, param_dtype: Any = jnp.float32):
  """The Linen module for `head` ("base", "masked_lm", "pretraining", "sequence_classification",
  "multiple_choice", "token_classification", "question_answering")."""
  heads = HEADS_BY_TYPE[config.model_type]
  if head not in heads:
    raise ValueError(f"head {head!r} does not exist for {config.model_type}; choose from {sorted(heads)}")
  return heads[head](config, dtype=dtype, param_dtype=param_dtype)


__all__ = ["BertConfig", "DistilBertConfig", "ModelConfig", "ModelOutput", "config_from_hf_dict", "get_model",
           "HEAD_NAMES", "bert", "distilbert"]
