"""FLOP counts for BERT-family encoders and model FLOPs utilisation (MFU).

Counts follow Kaplan et al. (2020), "Scaling Laws for Neural Language Models", Table 1, and the
PaLM paper's MFU (Chowdhery et al., 2022, Appendix B): a forward pass costs 2 FLOPs per
multiply-accumulate over the non-embedding matmul parameters, plus the attention scores and
the weighted sum, 2 * 2 * n_layers * length * hidden per token; training costs three forward
passes (forward, and the backward's two matmuls per weight).
"""
from __future__ import annotations

from typing import Optional

import jax

def matmul_params(config, with_mlm_head: bool) -> int:
  """Parameters that enter a matmul for every token (no embedding lookups, no biases)."""
  hidden = config.hidden_size
  inner = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim")
  per_layer = 4 * hidden * hidden + 2 * hidden * inner
  total = config.num_hidden_layers * per_layer
  if with_mlm_head:
    total += hidden * hidden + hidden * config.vocab_size  # transform dense + tied decoder
  return total


def forward_flops_per_token(config, length: int, with_mlm_head: bool) -> float:
  attention = 2 * 2 * config.num_hidden_layers * length * config.hidden_size
  return 2 * matmul_params(config, with_mlm_head) + attention


def distillation_flops_per_token(student_config, teacher_config: Optional[object], length: int,
                                 student_mlm_head: bool, teacher_mlm_head: bool) -> float:
  """One distillation step per token: the student trains (3 forwards), the teacher infers (1)."""
  flops = 3 * forward_flops_per_token(student_config, length, student_mlm_head)
  if teacher_config is not None:
    flops += forward_flops_per_token(teacher_config, length, teacher_mlm_head)
  return flops


def device_peak_flops(device: Optional[jax.Device] = None) -> Optional[float]:
  """Peak bfloat16 FLOP/s of a device (targets.CHIPS, by its device_kind), or None where unknown
  (such as a CPU)."""
  from distilbert_jax.hardware import targets
  chip = targets.chip_of_device_kind((device or jax.devices()[0]).device_kind)
  return None if chip is None else chip.peak_flops


def estimate_mfu(flops_per_token: float, tokens_per_second_per_device: float,
                 device: Optional[jax.Device] = None) -> Optional[float]:
  """Achieved model FLOP/s over the device's peak, in [0, 1]; None where the peak is unknown."""
  peak = device_peak_flops(device)
  return None if peak is None else flops_per_token * tokens_per_second_per_device / peak
