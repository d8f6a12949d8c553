"""BERT-family encoders as pure Flax Linen modules.

    model = models.get_model(config, head="masked_lm", dtype=models.resolve_dtype("auto"))
    variables = model.init(rng, input_ids)            # parameters carry logical axis names
    params = flax.linen.meta.unbox(variables["params"])
    out = model.apply({"params": params}, input_ids, attention_mask=mask, deterministic=True)

    # On CPU, compile with our XLA options (see `compiler_options`):
    forward = jax.jit(lambda p, ids, mask: model.apply({"params": p}, ids, attention_mask=mask),
                      compiler_options=models.compiler_options("base"))
"""
from __future__ import annotations

from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
from absl import logging

from distilbert_jax.models import bert, distilbert
from distilbert_jax.models.attention import resolve_attention_impl
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


def compiler_options(head: str = "base", backend: str | None = None, dtype: Any = jnp.float32,
                     training: bool = False) -> dict:
  """XLA compiler options for a program that runs a model with `head`, computing in `dtype`, on
  `backend` (default: JAX's default backend), for `jax.jit(..., compiler_options=...)`: explicit
  per program, never global. `training`: the program differentiates that model.

  CPU, float32, heads without a vocabulary projection: YNNPACK library fusions off. XLA:CPU
  otherwise fuses each LayerNorm into the YNNPACK call of the matrix product before it, which
  slowed that product down.
  CPU, float32, masked_lm and pretraining: XLA's defaults, since without YNNPACK the
  [tokens, 768] x [768, 30522] vocabulary product is much slower.
  CPU, bfloat16, inference: XLA's defaults, faster than YNNPACK for each product alone and than
  YNNPACK fusing every product with its neighbours (LIBRARY_FUSION_TYPE_DOT). Only YNNPACK runs
  bfloat16 products (accumulated in float32) on the processor's bfloat16 dot instructions.
  CPU, bfloat16, training: YNNPACK fusing every matrix product (LIBRARY_FUSION_TYPE_DOT). With
  the defaults or each product alone, the attention's batched backward products stay outside
  YNNPACK in bfloat16 and XLA:CPU's fallback kernel stops with "UNIMPLEMENTED: Unsupported
  element type for DotThunk::Execute: BF16 x BF16 = F32".
  GPU and TPU: XLA's defaults.
  The settings compared side by side: BENCHMARKS.md (float32 and bfloat16 on CPU) and its lever
  log, docs/performance.md.
  """
  if (backend or jax.default_backend()) != "cpu":
    return {}
  if jnp.dtype(dtype) == jnp.bfloat16:
    return {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"} if training else {}
  return {} if head in ("masked_lm", "pretraining") else {"xla_cpu_experimental_ynn_fusion_type": ""}


# The CPU flags of native bfloat16 dot products (AVX-512 BF16: Cooper Lake, Zen 4 and later;
# AMX: Sapphire Rapids and later), which XLA:CPU uses for bfloat16 products accumulated in float32.
NATIVE_BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_logged_dtype_choices = set()


def _read_cpuinfo() -> str:
  with open("/proc/cpuinfo") as f:
    return f.read()


def cpu_has_native_bfloat16() -> bool:
  """Whether the processor has native bfloat16 dot products (one of NATIVE_BFLOAT16_CPU_FLAGS in
  /proc/cpuinfo's flags); False where /proc/cpuinfo cannot be read (not Linux)."""
  try:
    cpuinfo = _read_cpuinfo()
  except OSError:
    return False
  flags = set()
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == "flags":
      flags.update(value.split())
  return any(flag in flags for flag in NATIVE_BFLOAT16_CPU_FLAGS)


def resolve_dtype(name: str, backend: Optional[str] = None) -> jnp.dtype:
  """The computation dtype that `name` ("float32", "bfloat16", ... or "auto") stands for.

  "auto": bfloat16 on GPU and TPU; on CPU (`backend`, default JAX's default backend) bfloat16
  only where the processor has native bfloat16 dot products, where the models' products
  (accumulated in float32, see matmul.einsum) run faster than in float32 (BENCHMARKS.md,
  bfloat16 on CPU); float32 elsewhere, where bfloat16 would be no faster. The choice is logged
  once.
  """
  if name != "auto":
    return jnp.dtype(name)
  backend = backend or jax.default_backend()
  if backend != "cpu":
    dtype, reason = jnp.dtype(jnp.bfloat16), f"on {backend}"
  elif cpu_has_native_bfloat16():
    dtype, reason = jnp.dtype(jnp.bfloat16), "on a CPU with native bfloat16 dot products"
  else:
    dtype, reason = jnp.dtype(jnp.float32), "on a CPU without native bfloat16 dot products"
  if (backend, dtype) not in _logged_dtype_choices:
    _logged_dtype_choices.add((backend, dtype))
    logging.info("dtype 'auto' is %s %s", dtype.name, reason)
  return dtype


__all__ = ["BertConfig", "DistilBertConfig", "ModelConfig", "ModelOutput", "compiler_options", "config_from_hf_dict",
           "cpu_has_native_bfloat16", "get_model", "resolve_attention_impl", "resolve_dtype", "HEAD_NAMES", "bert",
           "distilbert"]
