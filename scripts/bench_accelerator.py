"""Section 4 of scripts/benchmark.py: bfloat16 tokens/s and model FLOPs utilisation on a GPU or
TPU (`flops.estimate_mfu` against the device's data-sheet peak). Skipped on a CPU, unless
--force-accelerator-section runs the same code on tiny shapes to check that it runs.

The models compile as the configs say for accelerators (scan over layers,
jax.nn.dot_product_attention), in bfloat16 with float32 parameters.
"""
from __future__ import annotations

from bench_common import ARCHS, distillation_config, gathered_overrides, make_input_ids, median, our_config, \
  time_side_by_side


def gathered_flops_per_token(student_config, teacher_config, length: int, fraction: float) -> float:
  """`flops.distillation_flops_per_token` with the MLM heads (transform dense and vocabulary
  projection) counted only at `fraction` of the tokens: the model FLOPs of a step with
  `loss.logits_at_masked_only`, so that its MFU counts only the work it does."""
  from distilbert_jax.hardware import flops
  head = lambda c: 2 * (c.hidden_size * c.hidden_size + c.hidden_size * c.vocab_size)
  full = flops.distillation_flops_per_token(student_config, teacher_config, length, True, True)
  return full - (1.0 - fraction) * (3 * head(student_config) + head(teacher_config))


def accelerator_section(force: bool, quick: bool) -> dict:
  """Our MLM forwards and distillation steps (full vocabulary head; head at the masked positions
  only), bfloat16."""
  import jax
  import jax.numpy as jnp
  from distilbert_jax import models, train
  from distilbert_jax.jobs import distill
  from distilbert_jax.hardware import flops
  from bench_training import JaxDistillation

  backend = jax.default_backend()
  if backend == "cpu" and not force:
    return {"skipped": f"no GPU or TPU: jax backend is {backend!r} ({jax.devices()[0].device_kind})"}
  on_cpu = backend == "cpu"
  batch, length = (2, 32) if on_cpu else (256, 128)
  reps = 3 if on_cpu or quick else 10
  out = {"backend": backend, "device_kind": jax.devices()[0].device_kind, "inference": [], "training": []}
  for arch in ARCHS:
    config = our_config(arch, scan_layers=True, attention_impl="dot_product")
    model = models.get_model(config, "masked_lm", dtype=jnp.bfloat16)
    params = train.init_params(model, 0)
    forward = jax.jit(lambda p, ids, mask, model=model: model.apply({"params": p}, ids, attention_mask=mask).logits,
                      compiler_options=models.compiler_options("masked_lm"))
    ids = jax.device_put(make_input_ids(batch, length))
    mask = jnp.ones_like(ids)
    times = time_side_by_side({arch: lambda: jax.block_until_ready(forward(params, ids, mask))}, reps)[arch]
    tps = batch * length / median(times)
    out["inference"].append(dict(arch=arch, batch=batch, length=length, step_s=median(times), tokens_per_s=tps,
                                 mfu=flops.estimate_mfu(flops.forward_flops_per_token(config, length, True), tps)))
  bf16 = {"teacher.dtype": "bfloat16", "student.dtype": "bfloat16"}
  for name, overrides in (("distillation step", bf16),
                          ("distillation step, vocabulary head at masked positions",
                           {**bf16, **gathered_overrides()})):
    config = distillation_config(batch, length, **overrides)
    step = JaxDistillation(config)
    compile_s = step.compile()
    step.run()
    times = time_side_by_side({"step": step.run}, reps)["step"]
    tps = batch * length / median(times)
    if config.loss.logits_at_masked_only:
      fraction = distill.positions_cap((batch, length), config) / (batch * length)
      per_token = gathered_flops_per_token(step.student_config, step.teacher_config, length, fraction)
    else:  # what the trainer reports as mfu in metrics.jsonl
      per_token = flops.distillation_flops_per_token(step.student_config, step.teacher_config, length, True, True)
    out["training"].append(dict(name=name, batch=batch, length=length, step_s=median(times), tokens_per_s=tps,
                                compile_s=compile_s, mfu=flops.estimate_mfu(per_token, tps)))
    print(f"  accelerator: {name} {batch}x{length} {tps:,.0f} tokens/s", flush=True)
    del step
  return out
