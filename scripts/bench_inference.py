"""Sections 1 and 2 of scripts/benchmark.py: inference against transformers' PyTorch models, and
our student (DistilBERT-base) against our teacher (BERT-base).

For every (head, shape) the four forwards (our DistilBERT, PyTorch's DistilBERT, our BERT,
PyTorch's BERT) alternate in one loop, so that the framework ratio and the student/teacher ratio
both come from side-by-side runs.
"""
from __future__ import annotations

import os

import numpy as np

from bench_common import (ARCHS, count_params, make_input_ids, median, our_config, our_params_from_torch,
                          time_side_by_side, torch_model)


def inference_section(shapes, heads, reps: int, compile_fields: dict) -> list[dict]:
  """One row per (arch, head, shape): our jitted forward and transformers' (eval mode,
  torch.inference_mode), float32, on the same weights; outputs compared where the copy is cheap."""
  import jax
  import torch
  from distilbert_jax import models

  rows = []
  for head in heads:
    built = {}
    for arch in ARCHS:
      t_model = torch_model(arch, head)
      config = our_config(arch, **compile_fields)
      params = our_params_from_torch(t_model, config, head)
      model = models.get_model(config, head)
      forward = jax.jit(lambda p, ids, mask, model=model: model.apply({"params": p}, ids, attention_mask=mask),
                        compiler_options=models.compiler_options(head))
      built[arch] = (t_model, params, forward)
    for batch, length in shapes:
      ids = make_input_ids(batch, length)
      mask = np.ones_like(ids)
      j_ids, j_mask = jax.device_put(ids), jax.device_put(mask)
      t_ids, t_mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
      contenders, max_diff = {}, {}
      for arch, (t_model, params, forward) in built.items():
        def ours(forward=forward, params=params):
          return jax.block_until_ready(forward(params, j_ids, j_mask))

        def theirs(t_model=t_model):
          with torch.inference_mode():
            return t_model(input_ids=t_ids, attention_mask=t_mask)
        contenders[f"ours/{arch}"], contenders[f"torch/{arch}"] = ours, theirs
        if batch * length <= 1024:  # same weights, same outputs: checked where the copy is cheap
          field = "logits" if head == "masked_lm" else "last_hidden_state"
          mine, reference = getattr(ours(), field), getattr(theirs(), field).numpy()
          max_diff[arch] = float(np.abs(np.asarray(mine) - reference).max())
      times = time_side_by_side(contenders, reps)
      for arch in ARCHS:
        ours_s, torch_s = median(times[f"ours/{arch}"]), median(times[f"torch/{arch}"])
        rows.append(dict(arch=arch, head=head, batch=batch, length=length, ours_s=ours_s, torch_s=torch_s,
                         speedup=torch_s / ours_s, ours_tokens_per_s=batch * length / ours_s,
                         torch_tokens_per_s=batch * length / torch_s, max_abs_diff=max_diff.get(arch),
                         params=count_params(built[arch][1]), ours_times=times[f"ours/{arch}"],
                         torch_times=times[f"torch/{arch}"], load_average=os.getloadavg()[0]))
      print(f"  inference {head} {batch}x{length}: " + ", ".join(
          f"{r['arch']} {r['speedup']:.2f}x" for r in rows[-2:]), flush=True)
    del built
  return rows


def student_teacher_rows(inference_rows: list[dict]) -> list[dict]:
  """Our DistilBERT against our BERT (the paper, section 4: 40% fewer parameters, 60% faster),
  from the same side-by-side loops; PyTorch's ratio beside it."""
  out = []
  by_key = {(r["arch"], r["head"], r["batch"], r["length"]): r for r in inference_rows}
  for (arch, head, batch, length), student in by_key.items():
    if arch != "distilbert":
      continue
    teacher = by_key[("bert", head, batch, length)]
    out.append(dict(head=head, batch=batch, length=length, student_s=student["ours_s"], teacher_s=teacher["ours_s"],
                    throughput_ratio=teacher["ours_s"] / student["ours_s"],
                    torch_throughput_ratio=teacher["torch_s"] / student["torch_s"],
                    student_params=student["params"], teacher_params=teacher["params"],
                    param_ratio=student["params"] / teacher["params"]))
  return out
