"""BERT-family encoders as pure Flax Linen modules.

    model = models.get_model(config, head="masked_lm", dtype=jnp.bfloat16)
    variables = model.init(rng, input_ids)            # parameters carry logical axis names
    params = flax.linen.meta.unbox(variables["params"])
    out = model.apply({"params": params}, input_ids, attention_mask=mask, deterministic=True)

    # On CPU, compile with our XLA options (see `compiler_options`):
    forward = jax.jit(lambda p, ids, mask: model.apply({"params": p}, ids, attention_mask=mask),
                      compiler_options=models.compiler_options("base"))
"""
from __future__ import annotations

from typing import Any, Union

import jax
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


def compiler_options(head: str = "base", backend: str | None = None) -> dict:
  """XLA compiler options for a program that runs a model with `head` on `backend` (default: JAX's
  default backend), for `jax.jit(..., compiler_options=...)`: explicit per program, never global.

  CPU, heads without a vocabulary projection: YNNPACK library fusions off. XLA:CPU otherwise
  fuses each LayerNorm into the YNNPACK call of the matrix product before it, which ran that
  product at half speed. Measured side by side on 2 Sapphire Rapids cores (BENCHMARKS.md, lever
  log): DistilBERT-base forward 32 x 128 2.63 s -> 2.33 s and 2.24 s -> 1.91 s in two runs;
  at 8 x 128 0.65 s -> 0.52 s in one run, no change in the other.
  CPU, masked_lm and pretraining: XLA's defaults, since without YNNPACK the [tokens, 768] x
  [768, 30522] vocabulary product took 5x longer at 128 tokens (175 vs 35 ms). The distillation
  step, not an encoder-only program, showed no difference beyond noise either way.
  GPU and TPU: XLA's defaults.
  """
  if (backend or jax.default_backend()) == "cpu" and head not in ("masked_lm", "pretraining"):
    return {"xla_cpu_experimental_ynn_fusion_type": ""}
  return {}


__all__ = ["BertConfig", "DistilBertConfig", "ModelConfig", "ModelOutput", "compiler_options", "config_from_hf_dict", "get_model",
           "HEAD_NAMES", "bert", "distilbert"]
