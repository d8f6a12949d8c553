"""FLOP counts against the matrix products of the traced programs themselves, and MFU on a known
device kind.

The reference counts every `dot_general` in the jaxpr of a forward (or a forward and backward)
pass: 2 x (output elements) x (contracted size). Embedding lookups, LayerNorm, softmax and GELU
are not matrix products and are left out by both, as in Kaplan et al. (2020), Table 1.
"""
import math
import types

import jax
import jax.extend
import flax.linen as nn
import jax.numpy as jnp
import pytest

from distilbert_jax import models, train
from distilbert_jax.hardware import flops

BATCH, LENGTH = 2, 32
CONFIGS = {
    "distilbert": models.DistilBertConfig(vocab_size=1000, dim=64, hidden_dim=256, n_heads=4, n_layers=2,
                                          max_position_embeddings=64),
    "bert": models.BertConfig(vocab_size=1000, hidden_size=64, intermediate_size=256, num_attention_heads=4,
                              num_hidden_layers=3, max_position_embeddings=64),
}


def dot_flops(jaxpr) -> int:
  """FLOPs of every dot_general in a jaxpr, nested jaxprs (scan, jit, custom_vjp) included."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
    repeats = eqn.params["length"] if eqn.primitive.name == "scan" else 1  # a scanned layer runs per layer
    for value in eqn.params.values():
      if isinstance(value, jax.extend.core.ClosedJaxpr):
        total += repeats * dot_flops(value.jaxpr)
      elif isinstance(value, jax.extend.core.Jaxpr):
        total += repeats * dot_flops(value)
  return total


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("head", ["base", "masked_lm"])
@pytest.mark.parametrize("scan_layers", [False, True])
def test_forward_flops_equal_the_matrix_products_of_the_traced_forward(arch, head, scan_layers):
  config = CONFIGS[arch].__class__(**{**CONFIGS[arch].__dict__, "scan_layers": scan_layers})
  model = models.get_model(config, head)
  params = nn.meta.unbox(train.abstract_boxed_params(model))  # shapes only: nothing is compiled
  ids = jnp.ones((BATCH, LENGTH), jnp.int32)
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, ids))(params).jaxpr
  with_head = head == "masked_lm"
  # BERT's base model has a pooler: one [hidden, hidden] product per sequence, not per token,
  # which the per-token count leaves out.
  pooler = 2 * config.hidden_size ** 2 * BATCH if arch == "bert" and head == "base" else 0
  assert flops.forward_flops_per_token(config, LENGTH, with_head) * BATCH * LENGTH + pooler == dot_flops(jaxpr)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_a_training_step_costs_three_forwards_of_matrix_products(arch):
  model = models.get_model(CONFIGS[arch], "masked_lm")
  params = nn.meta.unbox(train.abstract_boxed_params(model))  # shapes only: nothing is compiled
  ids = jnp.ones((BATCH, LENGTH), jnp.int32)
  loss = lambda p: jnp.sum(model.apply({"params": p}, ids).logits ** 2)
  jaxpr = jax.make_jaxpr(jax.value_and_grad(loss))(params).jaxpr
  student_only = flops.distillation_flops_per_token(CONFIGS[arch], None, LENGTH, True, True)
  # The tied projection's hand-written backward takes the bias gradient as a [rows] x [rows, vocab]
  # product (models/matmul.py); the 3-forwards convention does not count it.
  bias_gradient = 2 * BATCH * LENGTH * CONFIGS[arch].vocab_size
  assert student_only * BATCH * LENGTH + bias_gradient == dot_flops(jaxpr)


def test_distillation_adds_one_teacher_forward():
  student, teacher = CONFIGS["distilbert"], CONFIGS["bert"]
  with_teacher = flops.distillation_flops_per_token(student, teacher, LENGTH, True, True)
  without = flops.distillation_flops_per_token(student, None, LENGTH, True, True)
  assert with_teacher - without == flops.forward_flops_per_token(teacher, LENGTH, True)


def test_matmul_params_of_bert_base_count_every_weight_matrix_once():
  per_layer = 4 * 768 * 768 + 2 * 768 * 3072  # q, k, v, out; two FFN matrices
  assert flops.matmul_params(models.BertConfig(), with_mlm_head=False) == 12 * per_layer == 84_934_656


def test_estimate_mfu_uses_the_h100_peak_and_is_none_on_cpu():
  h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
  assert flops.estimate_mfu(989e9, 500.0, h100) == pytest.approx(0.5)
  assert flops.estimate_mfu(1e9, 1.0, types.SimpleNamespace(device_kind="cpu")) is None
