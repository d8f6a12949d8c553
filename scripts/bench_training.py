"""Section 3 of scripts/benchmark.py: our distillation step against the original trainer's
PyTorch step, on the same weights, and the peak memory of each in its own process.

Our step is the library's, built as `train.run` builds it: the distill job's parts
(`distill.build_models`, a fixed batch as its data, `distill.job_from_parts` with its
DistillationLoss) make a `train.Job`, and `train.make_train_step` makes the step, on a
one-device mesh, jitted with the training state donated. The less-work variants are config
fields of the library: `loss.ce_masked_only` (KL over masked tokens, as the original's
restrict_ce_to_mask) and `loss.logits_at_masked_only` (the vocabulary projection of student and
teacher only at the masked positions).
"""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from bench_common import (MASK_ID, PAD_ID, SPECIAL_IDS, distillation_config, gathered_overrides, make_input_ids,
                          median, memory_status, reset_peak_rss, run_child, time_side_by_side, torch_model,
                          torch_state_dict)

# Optimizer steps the learning-rate schedule is laid out for: both sides warm up over the same
# first 5%, so that the steps timed here run at the same learning rates.
NUM_STEPS = 1000


def teacher_from_state_dict(config, state_dict: dict):
  """(model, float32 params, model config) as `distill.build_teacher` gives them for
  `config.teacher`, from a transformers BertForMaskedLM state dict in memory instead of a
  directory."""
  import jax
  from distilbert_jax import convert
  from distilbert_jax.jobs import distill
  model, _, model_config = distill.build_teacher(config, abstract=True)  # the model, no weights
  # On the device once, so that the variants built from it share one copy.
  params = jax.device_put(convert.state_dict_to_params(state_dict, model_config, config.teacher.head))
  return model, params, model_config


class JaxDistillation:
  """One distillation step of the library (`train.make_train_step` on a `distill` job), compiled
  ahead of time; `run()` takes one step on a fixed batch and returns the step's metrics."""

  def __init__(self, config, teacher=None, donate: bool = True, compiler_options: Optional[dict] = None):
    import jax
    from distilbert_jax import sharding, train
    from distilbert_jax.jobs import distill
    from distilbert_jax.data import masking

    batch, length = config.train.batch_size, config.data.max_length
    self.config = config
    # The job's parts as distill.make_job builds them; the data part is this fixed batch, whose
    # masking draws uniformly over the non-special ids of bert-base-uncased's vocabulary.
    pair = distill.build_models(config, teacher=teacher)
    self.teacher, self.teacher_params, self.teacher_config = pair.teacher, pair.teacher_params, pair.teacher_config
    self.student, self.student_config = pair.student, pair.student_config
    # A host copy for PyTorch (a copy: the state's buffers are donated to the step).
    self.student_params = jax.tree.map(np.array, pair.student_params)
    data = distill.Data(iterator=None, num_steps=NUM_STEPS, tokenizer_dir=None, mask_id=MASK_ID,
                        token_probs=masking.uniform_token_probs(self.student_config.vocab_size, SPECIAL_IDS))
    job = distill.job_from_parts(config, pair, data)
    tx, schedule = train.make_optimizer(config.optim, job.num_steps)
    step = train.make_train_step(job, tx, schedule, sharding.make_mesh(1, 1, 1), config.train.grad_accum_steps)
    self.state = train.init_state(job.initial_params(), tx, config.train.seed)
    ids = make_input_ids(batch, length, seed=1)
    self.batch = {"input_ids": jax.device_put(ids), "attention_mask": jax.device_put(np.ones_like(ids))}
    self.compiler_options = train.step_compiler_options(job) if compiler_options is None else compiler_options
    self.jitted = jax.jit(step, donate_argnums=(0,) if donate else (), compiler_options=self.compiler_options)
    self.compiled = None
    self.tokens = batch * length

  def compile(self) -> float:
    """Seconds to lower and compile the step (tracing included)."""
    import time
    start = time.perf_counter()
    self.compiled = self.jitted.lower(self.state, self.teacher_params, self.batch).compile()
    return time.perf_counter() - start

  def run(self):
    import jax
    self.state, metrics = self.compiled(self.state, self.teacher_params, self.batch)
    return jax.block_until_ready(metrics)

  def losses(self, metrics) -> dict:
    """The step's metrics as floats: loss, loss_ce, loss_mlm, loss_cos, grad_norm, ..."""
    import jax
    from distilbert_jax import train
    return train.normalise_metrics(jax.device_get(metrics))


class TorchDistillation:
  """The original trainer's step (transformers examples/research_projects/distillation,
  distiller.py `Distiller.prepare_batch_mlm`, `step` and `optimize`) with its defaults for the
  released model: MLM masking on the host, student forward, teacher forward under no_grad,
  5.0 loss_ce (KLDiv batchmean x T^2 over real tokens, or masked ones with
  restrict_ce_to_mask) + 2.0 loss_mlm + 1.0 loss_cos, backward, clip_grad_norm 5, AdamW,
  linear schedule. With `autocast`, the forwards and losses run under
  torch.autocast("cpu", dtype=torch.bfloat16), as mixed-precision training does in PyTorch: float32
  weights, bfloat16 products; backward and optimizer outside it."""

  def __init__(self, batch: int, length: int, teacher_state_dict=None, student_state_dict=None,
               student_hf_config=None, restrict_ce_to_mask: bool = False, seed: int = 0, autocast: bool = False):
    import torch
    import transformers
    torch.manual_seed(seed)
    teacher_cfg = transformers.BertConfig(output_hidden_states=True)
    student_cfg = transformers.DistilBertConfig(**(student_hf_config or {}), output_hidden_states=True)
    self.teacher = transformers.BertForMaskedLM(teacher_cfg).eval()
    self.student = transformers.DistilBertForMaskedLM(student_cfg).train()
    for model, sd in ((self.teacher, teacher_state_dict), (self.student, student_state_dict)):
      if sd is not None:
        missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()},
                                                    strict=False)
        tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "vocab_projector.weight"}
        assert not unexpected and set(missing) <= tied, (missing, unexpected)
    self.restrict_ce_to_mask = restrict_ce_to_mask
    self.autocast = autocast
    self.temperature, self.alpha_ce, self.alpha_mlm, self.alpha_cos = 2.0, 5.0, 2.0, 1.0
    self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6,
                                       weight_decay=0.0)
    self.scheduler = transformers.get_linear_schedule_with_warmup(self.optimizer, NUM_STEPS // 20, NUM_STEPS)
    self.ce_loss_fct = torch.nn.KLDivLoss(reduction="batchmean")
    self.lm_loss_fct = torch.nn.CrossEntropyLoss(ignore_index=-100)
    self.cosine_loss_fct = torch.nn.CosineEmbeddingLoss(reduction="mean")
    self.token_probs = torch.ones(student_cfg.vocab_size)
    self.token_probs[list(SPECIAL_IDS)] = 0.0
    self.pred_probs = torch.tensor([0.8, 0.1, 0.1])
    self.token_ids = torch.from_numpy(make_input_ids(batch, length, seed=1)).long()
    self.lengths = torch.full((batch,), length)
    self.tokens = batch * length

  def prepare_batch_mlm(self):
    import torch
    token_ids, lengths = self.token_ids.clone(), self.lengths
    bs, max_seq_len = token_ids.size()
    attn_mask = torch.arange(max_seq_len)[None, :] < lengths[:, None]
    mlm_labels = token_ids.new(token_ids.size()).copy_(token_ids)
    x_prob = self.token_probs[token_ids.flatten()]
    n_tgt = math.ceil(0.15 * lengths.sum().item())
    tgt_ids = torch.multinomial(x_prob / x_prob.sum(), n_tgt, replacement=False)
    pred_mask = torch.zeros(bs * max_seq_len, dtype=torch.bool)
    pred_mask[tgt_ids] = 1
    pred_mask = pred_mask.view(bs, max_seq_len)
    pred_mask[token_ids == PAD_ID] = 0
    _token_ids_real = token_ids[pred_mask]
    _token_ids_rand = _token_ids_real.clone().random_(self.token_probs.numel())
    _token_ids_mask = _token_ids_real.clone().fill_(MASK_ID)
    probs = torch.multinomial(self.pred_probs, len(_token_ids_real), replacement=True)
    _token_ids = (_token_ids_mask * (probs == 0).long() + _token_ids_real * (probs == 1).long()
                  + _token_ids_rand * (probs == 2).long())
    token_ids = token_ids.masked_scatter(pred_mask, _token_ids)
    mlm_labels[~pred_mask] = -100
    return token_ids, attn_mask, mlm_labels

  def run(self):
    import torch
    input_ids, attention_mask, lm_labels = self.prepare_batch_mlm()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
      loss, metrics = self.forward_and_losses(input_ids, attention_mask, lm_labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.student.parameters(), 5.0)
    self.optimizer.step()
    self.optimizer.zero_grad()
    self.scheduler.step()
    return metrics

  def forward_and_losses(self, input_ids, attention_mask, lm_labels):
    """(total loss, {name: float}) of `Distiller.step`: the forwards and the three losses."""
    import torch
    import torch.nn.functional as F
    s_out = self.student(input_ids=input_ids, attention_mask=attention_mask)
    s_logits, s_hidden_states = s_out["logits"], s_out["hidden_states"]
    with torch.no_grad():
      t_out = self.teacher(input_ids=input_ids, attention_mask=attention_mask)
      t_logits, t_hidden_states = t_out["logits"], t_out["hidden_states"]
    if self.restrict_ce_to_mask:
      mask = (lm_labels > -1).unsqueeze(-1).expand_as(s_logits)
    else:
      mask = attention_mask.unsqueeze(-1).expand_as(s_logits)
    s_logits_slct = torch.masked_select(s_logits, mask).view(-1, s_logits.size(-1))
    t_logits_slct = torch.masked_select(t_logits, mask).view(-1, s_logits.size(-1))
    T = self.temperature
    loss_ce = self.ce_loss_fct(F.log_softmax(s_logits_slct / T, dim=-1), F.softmax(t_logits_slct / T, dim=-1)) * T ** 2
    loss = self.alpha_ce * loss_ce
    loss_mlm = self.lm_loss_fct(s_logits.view(-1, s_logits.size(-1)), lm_labels.view(-1))
    loss = loss + self.alpha_mlm * loss_mlm
    s_hidden, t_hidden = s_hidden_states[-1], t_hidden_states[-1]
    mask = attention_mask.unsqueeze(-1).expand_as(s_hidden)
    dim = s_hidden.size(-1)
    s_hidden_slct = torch.masked_select(s_hidden, mask).view(-1, dim)
    t_hidden_slct = torch.masked_select(t_hidden, mask).view(-1, dim)
    target = s_hidden_slct.new(s_hidden_slct.size(0)).fill_(1)
    loss_cos = self.cosine_loss_fct(s_hidden_slct, t_hidden_slct, target)
    loss = loss + self.alpha_cos * loss_cos
    return loss, {"loss": loss.item(), "loss_ce": loss_ce.item(), "loss_mlm": loss_mlm.item(),
                  "loss_cos": loss_cos.item()}

  def losses(self, metrics) -> dict:
    return metrics


# Timing order, and the PyTorch step each of ours is compared with (the same work).
ORDER = ("ours", "torch", "ours/ce_masked_only", "torch/restrict_ce_to_mask", "ours/ce_masked_only+gathered_vocab")
BASELINE = {"ours": "torch", "ours/ce_masked_only": "torch/restrict_ce_to_mask",
            "ours/ce_masked_only+gathered_vocab": "torch/restrict_ce_to_mask"}
CHECKED_LOSSES = ("loss", "loss_ce", "loss_mlm", "loss_cos")
# The gathered step computes the same numbers from fewer logits: only summation order differs.
GATHERED_RTOL = 1e-5


def same_weights_atol() -> float:
  """Max |logit difference| that still means "same weights": float32 on both sides differs by a
  few 1e-6 on CPU; GPUs may run float32 matrix products in TF32 (10-bit mantissa)."""
  import jax
  return 1e-4 if jax.default_backend() == "cpu" else 5e-2


def training_section(batch: int, length: int, reps: int, variants: bool, overrides: dict) -> dict:
  """Our step and the PyTorch step on the same weights, alternated; with `variants`, also the
  steps that do less work (KL over masked tokens; plus the vocabulary projection only at the
  masked positions), and the check that the gathered step's losses equal the full one's."""
  from distilbert_jax import convert
  teacher_sd = torch_state_dict(torch_model("bert", "masked_lm"))
  config = distillation_config(batch, length, **overrides)
  # One copy of the teacher's weights serves every JAX variant (they share its layout).
  teacher = teacher_from_state_dict(config, teacher_sd)

  contenders, jax_steps, compile_s = {}, {}, {}
  ours = JaxDistillation(config, teacher)
  student_sd = convert.params_to_state_dict(ours.student_params, ours.student_config, "masked_lm")
  student_hf = {k: v for k, v in ours.student_config.to_hf_dict().items() if k not in ("model_type", "architectures")}
  jax_steps["ours"] = ours
  contenders["torch"] = TorchDistillation(batch, length, teacher_sd, student_sd, student_hf)
  if variants:
    masked = distillation_config(batch, length, **{**overrides, "loss.ce_masked_only": True})
    gathered = distillation_config(batch, length, **{**overrides, **gathered_overrides()})
    jax_steps["ours/ce_masked_only"] = JaxDistillation(masked, teacher)
    jax_steps["ours/ce_masked_only+gathered_vocab"] = JaxDistillation(gathered, teacher)
    contenders["torch/restrict_ce_to_mask"] = TorchDistillation(batch, length, teacher_sd, student_sd, student_hf,
                                                                restrict_ce_to_mask=True)
  del teacher_sd
  for name, step in jax_steps.items():
    compile_s[name] = step.compile()
    contenders[name] = step

  # Same weights: one forward of each framework's student and teacher agree. The first steps'
  # losses are printed side by side; ours and PyTorch's differ by the masking's random draw.
  checks = check_same_weights(ours, contenders["torch"])
  first = {name: {k: float(v) for k, v in c.losses(c.run()).items()} for name, c in contenders.items()}
  if variants:  # same keys, same masking: the gathered step must give the full step's losses
    full, gathered = first["ours/ce_masked_only"], first["ours/ce_masked_only+gathered_vocab"]
    checks["gathered_vs_full_max_rel_diff"] = max(abs(gathered[k] - full[k]) / max(abs(full[k]), 1e-12)
                                                  for k in CHECKED_LOSSES)
  failures = [f"{k} = {v:.1e} > {same_weights_atol():.0e}" for k, v in checks.items()
              if k.endswith("_logits_max_abs_diff") and not v <= same_weights_atol()]
  if not checks.get("gathered_vs_full_max_rel_diff", 0.0) <= GATHERED_RTOL:
    failures.append(f"gathered_vs_full_max_rel_diff = {checks['gathered_vs_full_max_rel_diff']:.1e} > "
                    f"{GATHERED_RTOL:.0e}")
  order = [n for n in ORDER if n in contenders]
  times = time_side_by_side({n: contenders[n].run for n in order}, reps, warmup=0)  # the first steps warmed up
  rows = []
  for name in order:
    step_s = median(times[name])
    row = dict(name=name, step_s=step_s, tokens_per_s=batch * length / step_s, times=times[name],
               first_step_losses=first[name], compile_s=compile_s.get(name), load_average=os.getloadavg()[0])
    if name in BASELINE:
      row["vs_torch"] = median(times[BASELINE[name]]) / step_s
      row["torch_baseline"] = BASELINE[name]
    rows.append(row)
  print("  training: " + ", ".join(f"{r['name']} {r['step_s']:.2f}s" for r in rows), flush=True)
  return dict(batch=batch, length=length, rows=rows, checks=checks, check_failures=failures,
              config_overrides={k: str(v) for k, v in overrides.items()})


def check_same_weights(ours: JaxDistillation, theirs: TorchDistillation) -> dict:
  """Max |difference| of student and teacher MLM logits (deterministic) on one sequence."""
  import jax
  import torch
  ids = make_input_ids(1, 128, seed=2)
  mask = np.ones_like(ids)
  out = {}
  for name, model, params, t_model in (("student", ours.student, ours.state.params, theirs.student),
                                       ("teacher", ours.teacher, ours.teacher_params, theirs.teacher)):
    mine = model.apply({"params": params}, jax.device_put(ids), attention_mask=jax.device_put(mask))
    was_training = t_model.training
    t_model.eval()
    with torch.inference_mode():
      reference = t_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    t_model.train(was_training)
    out[f"{name}_logits_max_abs_diff"] = float(np.abs(np.asarray(mine.logits) - reference["logits"].numpy()).max())
  return out


# ===================================================================================== memory, one process each
def memory_probe(kind: str, batch: int, length: int, overrides: dict) -> dict:
  """Runs in a fresh process (see `measure_memory`): peak resident memory of one contender,
  with no other framework imported. Weights are random (same shapes as in the timing)."""
  import importlib
  if kind == "torch":
    for module in ("torch", "transformers"):  # their share of the resident memory is reported
      importlib.import_module(module)
    after_import = memory_status()["VmRSS"]
    step = TorchDistillation(batch, length)
    before = memory_status()["VmRSS"]
    reset_peak_rss()
    for _ in range(2):  # AdamW allocates its moments in the first step
      step.run()
    return dict(kind=kind, rss_after_import=after_import, rss_before_steps=before,
                peak_rss=memory_status()["VmHWM"])
  importlib.import_module("jax")
  after_import = memory_status()["VmRSS"]
  step = JaxDistillation(distillation_config(batch, length, **overrides))
  before = memory_status()["VmRSS"]
  reset_peak_rss()
  compile_s = step.compile()
  compile_peak = memory_status()["VmHWM"]
  analysis = step.compiled.memory_analysis()
  xla = None
  if analysis is not None:
    xla = dict(argument_bytes=analysis.argument_size_in_bytes, output_bytes=analysis.output_size_in_bytes,
               alias_bytes=analysis.alias_size_in_bytes, temp_bytes=analysis.temp_size_in_bytes,
               generated_code_bytes=analysis.generated_code_size_in_bytes)
  reset_peak_rss()
  for _ in range(2):
    step.run()
  return dict(kind=kind, rss_after_import=after_import, rss_before_steps=before, compile_peak_rss=compile_peak,
              compile_s=compile_s, peak_rss=memory_status()["VmHWM"], xla_memory_analysis=xla)


def measure_memory(kinds, batch: int, length: int, overrides: dict) -> dict:
  """Each contender's peak memory in its own process, so that neither framework's allocations
  count against the other."""
  import json
  return {kind: run_child(["--memory-probe", kind, "--train-batch", str(batch), "--train-length", str(length),
                           "--overrides", json.dumps(overrides)], "MEMORY") for kind in kinds}
