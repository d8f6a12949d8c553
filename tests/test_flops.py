"""FLOP counts against hand-counted matmuls, and MFU on a known device kind."""
import types

import pytest

from distilbert_jax import flops, models


def test_matmul_params_of_bert_base_count_every_weight_matrix_once():
  c = models.BertConfig()
  per_layer = 4 * 768 * 768 + 2 * 768 * 3072  # q, k, v, out; two FFN matrices
  assert flops.matmul_params(c, with_mlm_head=False) == 12 * per_layer == 84_934_656
  assert flops.matmul_params(c, with_mlm_head=True) == 12 * per_layer + 768 * 768 + 768 * 30522


def test_distillation_flops_are_three_student_forwards_plus_one_teacher_forward():
  s, t = models.DistilBertConfig(), models.BertConfig()
  got = flops.distillation_flops_per_token(s, t, 128, True, True)
  assert got == 3 * flops.forward_flops_per_token(s, 128, True) + flops.forward_flops_per_token(t, 128, True)
  # Attention term: 2 matmuls x 2 FLOPs x layers x length x hidden.
  assert flops.forward_flops_per_token(s, 128, False) - 2 * flops.matmul_params(s, False) == 4 * 6 * 128 * 768


def test_estimate_mfu_uses_the_h100_peak_and_is_none_on_cpu():
  h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
  assert flops.estimate_mfu(989e9, 500.0, h100) == pytest.approx(0.5)
  assert flops.estimate_mfu(1e9, 1.0, types.SimpleNamespace(device_kind="cpu")) is None
