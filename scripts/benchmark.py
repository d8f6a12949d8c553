"""Speed you can show: our JAX models and distillation step against transformers' PyTorch ones.

  .venv/bin/python scripts/benchmark.py                 # the default run, under 10 minutes on 2 cores
  .venv/bin/python scripts/benchmark.py --quick         # 8x128 only, about 2 minutes
  .venv/bin/python scripts/benchmark.py --full          # every model, head and shape (about 20 minutes)
  .venv/bin/python scripts/benchmark.py --levers        # compile levers, side by side (about 6 minutes)
  .venv/bin/python scripts/benchmark.py --xla-flag-sweep   # XLA CPU flags, one process per setting
  .venv/bin/python scripts/benchmark.py --malloc tcmalloc  # both frameworks on tcmalloc (BENCHMARKS.md)

Every figure is the median of several timed runs after one warm-up run, and the contenders of
one table row run side by side in one process, in alternating order (forward on even
repetitions, reversed on odd ones), so that machine noise hits them alike; the ratio stands next
to them. Both sides hold the SAME weights: a randomly initialised transformers model, copied
into our parameters with `convert.state_dict_to_params` (training: our student copied out with
`convert.params_to_state_dict`). PyTorch runs with as many threads as XLA's CPU client uses.

Sections:
  1. Inference: our jitted forward vs transformers (eval, torch.inference_mode), float32.
  2. Student vs teacher: our DistilBERT-base vs our BERT-base (the paper, section 4: 40% fewer
     parameters, 60% faster).
  3. Training: our distillation step (train.make_train_step on configs/distilbert_base.py,
     float32, batch 8 x 128, no accumulation) vs a PyTorch step doing the original trainer's
     work (distiller.py: teacher under no_grad, student, KL over real tokens x T^2, CE over
     masked tokens, cosine over real tokens, backward, clip 5, AdamW); compile time; peak
     memory of each in its own process (/proc/self/status VmHWM, reset through clear_refs).
  4. Accelerator: bfloat16 tokens/s and MFU (flops.estimate_mfu); skipped without a GPU/TPU.
  5. CPU roofline: each framework's float32 matrix products alone (GFLOP/s), the model FLOP rate
     each reaches end to end, and the rate a target ratio would need.

Measured tables, each with the machine's load while it ran: BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # configs/ is not a package that the install puts on sys.path

# bert-base-uncased's special ids ([PAD], [UNK], [CLS], [SEP], [MASK]): the masking never picks them.
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
SPECIAL_IDS = (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID)
ARCHS = ("distilbert", "bert")
SHAPES = ((1, 128), (8, 128), (32, 128), (8, 512))


# ===================================================================================== timing
def time_side_by_side(contenders: dict[str, Callable[[], object]], reps: int, warmup: int = 1
                      ) -> dict[str, list[float]]:
  """Seconds of each run of each contender. Every contender runs `warmup` times first; then in
  repetition r they run in the given order when r is even and in reverse when it is odd."""
  names = list(contenders)
  for _ in range(warmup):
    for name in names:
      contenders[name]()
  times = {name: [] for name in names}
  for r in range(reps):
    for name in (names if r % 2 == 0 else names[::-1]):
      start = time.perf_counter()
      contenders[name]()
      times[name].append(time.perf_counter() - start)
  return times


def median(xs) -> float:
  return float(np.median(xs))


def memory_status() -> dict[str, int]:
  """VmRSS and VmHWM (peak resident set) of this process, in bytes."""
  out = {}
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(("VmRSS:", "VmHWM:")):
        out[line.split(":")[0]] = int(line.split()[1]) * 1024
  return out


def reset_peak_rss() -> None:
  """Sets VmHWM back to the current RSS (Linux >= 4.0, `echo 5 > /proc/PID/clear_refs`)."""
  with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
    f.write("5")


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def cpu_threads() -> int:
  """The threads XLA's CPU client uses: the cores this process may run on."""
  return len(os.sched_getaffinity(0))


def make_input_ids(batch: int, length: int, seed: int = 0) -> np.ndarray:
  """[batch, length] int32: [CLS] random word-piece ids [SEP], no padding."""
  ids = np.random.default_rng(seed).integers(1000, 30522, (batch, length), dtype=np.int32)
  ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
  return ids


# ===================================================================================== models
def hf_config(arch: str):
  import transformers
  return transformers.BertConfig() if arch == "bert" else transformers.DistilBertConfig()


def torch_model(arch: str, head: str, seed: int = 0):
  """A randomly initialised transformers model in eval mode (default Hugging Face config)."""
  import torch
  import transformers
  classes = {("bert", "base"): transformers.BertModel, ("bert", "masked_lm"): transformers.BertForMaskedLM,
             ("distilbert", "base"): transformers.DistilBertModel,
             ("distilbert", "masked_lm"): transformers.DistilBertForMaskedLM}
  torch.manual_seed(seed)
  return classes[arch, head](hf_config(arch)).eval()


def our_config(arch: str, **compile_fields):
  from distilbert_jax import models
  return dataclasses.replace(models.config_from_hf_dict(hf_config(arch).to_dict()), **compile_fields)


def our_params_from_torch(model, config, head: str):
  """The torch model's weights as our parameters (on the default device)."""
  import jax
  from distilbert_jax import convert
  state_dict = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
  return jax.device_put(convert.state_dict_to_params(state_dict, config, head))


def init_params(model, seed: int = 0):
  """Random parameters of `model` (unboxed), as the trainer initialises them."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  return nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.ones((1, 8), jnp.int32))["params"])


def count_params(params) -> int:
  import jax
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


# ===================================================================================== 1, 2: inference
def inference_section(shapes, heads, reps: int, compile_fields: dict) -> list[dict]:
  """For every (head, shape): our DistilBERT, PyTorch DistilBERT, our BERT, PyTorch BERT
  alternated in one loop, so the framework ratio and the student/teacher ratio are both side by
  side."""
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
  """Our DistilBERT against our BERT, from the same side-by-side loops."""
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


# ===================================================================================== 3: training
def distillation_config(batch: int, length: int, **overrides):
  """configs/distilbert_base.py for one CPU process: float32, `batch` sequences of `length`,
  no accumulation; a default BERT-base teacher (random weights). `overrides`: "section.field"."""
  from configs import distilbert_base
  config = distilbert_base.get_config()
  config.teacher.random_config = dict(model_type="bert")  # transformers' BertConfig() defaults
  config.teacher.dtype = "float32"
  config.student.dtype = "float32"
  config.train.batch_size = batch
  config.train.grad_accum_steps = 1
  config.data.max_length = length
  import jax
  if jax.default_backend() == "cpu":  # unrolled layers and XLA attention: faster on CPU (lever log)
    overrides = {**_unrolled_xla(), **overrides}
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def gather_flat(hidden, positions):
  """hidden [batch, length, dim], positions [n] indices into batch * length -> [n, dim]."""
  return hidden.reshape(-1, hidden.shape[-1])[positions]


def flat_position_models():
  """MLM heads whose `masked_positions` may also be a flat [n] index into batch * length, so
  that the vocabulary projection runs only where the losses need it (proposed for models/)."""
  import flax.linen as nn
  from distilbert_jax.models import bert, distilbert

  original_gather = distilbert._gather_positions

  def gather(hidden, masked_positions):
    if masked_positions is not None and masked_positions.ndim == 1:
      return gather_flat(hidden, masked_positions)
    return original_gather(hidden, masked_positions)
  distilbert._gather_positions = gather  # pylint: disable=protected-access

  class FlatBertForMaskedLM(bert.BertForMaskedLM):
    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 deterministic: bool = True, output_attentions: bool = False,
                 output_hidden_states: bool = False, masked_positions=None):
      body = bert._base(self, add_pooling_layer=self.next_sentence)  # pylint: disable=protected-access
      out = body(input_ids, attention_mask, token_type_ids, position_ids, deterministic,
                 output_attentions, output_hidden_states)
      hidden = out.last_hidden_state
      if masked_positions is not None:
        hidden = gather_flat(hidden, masked_positions)
      logits, nsp = bert._Cls(self.config, self.dtype, self.param_dtype, self.next_sentence, name="cls")(  # pylint: disable=protected-access
          hidden, out.pooler_output, body)
      return out.replace(logits=logits, seq_relationship_logits=nsp)
  return FlatBertForMaskedLM, distilbert.DistilBertForMaskedLM


def make_gathered_train_step(config, student, teacher, tx, schedule, token_probs, batch: int, length: int):
  """train.make_train_step's step (no accumulation, no hidden/MSE losses) with loss_ce over
  masked tokens only and the vocabulary projection of teacher AND student computed only at
  the ceil(mlm_probability * batch * length) positions that the masking can choose (the
  original's n_tgt for a full batch; masking picks over the flattened batch, so a per-row cap
  would not be exact). Proposed for train.py; the script checks it against make_train_step."""
  import jax
  import jax.numpy as jnp
  import optax
  from distilbert_jax import losses, masking, train

  l, m = config.loss, config.mask
  assert l.ce_masked_only and l.alpha_mse == 0 and l.alpha_hidden == 0 and config.train.grad_accum_steps == 1
  n_cap = int(masking.num_to_predict(batch * length, m.mlm_probability))
  token_probs = jnp.asarray(token_probs)
  names = [n for n in ("ce", "mlm", "cos") if getattr(l, f"alpha_{n}") > 0]

  def step(state, teacher_params, batch_arrays):
    rng = jax.random.fold_in(state.rng, state.step)
    mask_rng, dropout_rng = jax.random.split(rng)
    attention_mask = batch_arrays["attention_mask"]
    masked = masking.mask_tokens(mask_rng, batch_arrays["input_ids"].astype(jnp.int32), attention_mask,
                                 token_probs, mask_token_id=MASK_ID, vocab_size=token_probs.shape[0],
                                 mlm_probability=m.mlm_probability, mask_prob=m.mask_prob,
                                 random_prob=m.random_prob)
    # Chosen positions first (weight 1 > 0); ties keep the lower index. n_tgt <= n_cap always.
    flat_weights = masked.mlm_weights.reshape(-1)
    positions = jax.lax.top_k(flat_weights, n_cap)[1]
    weights, labels = flat_weights[positions], masked.mlm_labels.reshape(-1)[positions]
    real = attention_mask.astype(jnp.float32)
    denominators = {"ce": jnp.sum(flat_weights), "mlm": jnp.sum(flat_weights), "cos": jnp.sum(real)}

    def loss_fn(params):
      kw = dict(attention_mask=attention_mask, masked_positions=positions)
      student_out = student.apply({"params": params}, masked.input_ids, deterministic=False,
                                  rngs={"dropout": dropout_rng}, **kw)
      teacher_out = jax.lax.stop_gradient(
          teacher.apply({"params": teacher_params}, masked.input_ids, deterministic=True, **kw))
      sums = {"ce": losses.kl_div_loss(student_out.logits, teacher_out.logits, weights, l.temperature)[0],
              "mlm": losses.masked_lm_loss(student_out.logits, labels, weights)[0],
              "cos": losses.cosine_embedding_loss(student_out.last_hidden_state, teacher_out.last_hidden_state,
                                                  real)[0]}
      sums = {n: sums[n] for n in names}
      total = sum(getattr(l, f"alpha_{n}") * v / jnp.maximum(denominators[n], 1.0) for n, v in sums.items())
      return total, sums

    (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = train.apply_gradients(state, grads, loss, tx)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step)}
    metrics.update({f"loss_{n}": v / jnp.maximum(denominators[n], 1.0) for n, v in sums.items()})
    return new_state, metrics

  return step


class JaxDistillation:
  """Our distillation step, built as train.train_and_evaluate builds it (one device)."""

  def __init__(self, config, teacher_params=None, gathered: bool = False, donate: bool = True, seed: int = 0,
               compiler_options: Optional[dict] = None):
    import jax
    import jax.numpy as jnp
    from distilbert_jax import masking, models, sharding, train

    batch, length = config.train.batch_size, config.data.max_length
    if teacher_params is None:
      self.teacher, teacher_params, self.teacher_config = train.build_teacher(config)
    else:
      # What build_teacher does for teacher.path, from weights in memory (the PyTorch model's).
      t = config.teacher
      self.teacher_config = dataclasses.replace(
          models.config_from_hf_dict(dict(t.random_config)), scan_layers=t.scan_layers,
          remat_policy=t.remat_policy, attention_impl=t.attention_impl)
      dtype = jnp.dtype(t.dtype)
      self.teacher = models.get_model(self.teacher_config, t.head, dtype=dtype)
      teacher_params = jax.tree.map(lambda x: jnp.asarray(x, dtype),
                                    _relayout(self.teacher_config)(teacher_params, self.teacher_config))
    self.student, student_params, self.student_config = train.build_student(config, self.teacher_config,
                                                                            teacher_params)
    self.teacher_params = teacher_params
    self.student_params = jax.tree.map(np.asarray, student_params)  # a host copy for PyTorch
    tx, schedule = train.make_optimizer(config, num_steps=1000)
    token_probs = masking.uniform_token_probs(self.student_config.vocab_size, SPECIAL_IDS)
    if gathered:
      flat_bert, flat_distilbert = flat_position_models()
      self.teacher = flat_bert(self.teacher_config, dtype=self.teacher.dtype)
      self.student = flat_distilbert(self.student_config, dtype=self.student.dtype)
      step = make_gathered_train_step(config, self.student, self.teacher, tx, schedule, token_probs, batch, length)
    else:
      mesh = sharding.make_mesh(1, 1, 1)
      step = train.make_train_step(config, self.student, self.teacher, tx, schedule, token_probs, MASK_ID, (), mesh)
    self.state = train.TrainState(step=jnp.zeros((), jnp.int32), params=student_params,
                                  opt_state=tx.init(student_params), rng=jax.random.PRNGKey(seed))
    ids = make_input_ids(batch, length, seed=1)
    self.batch = {"input_ids": jax.device_put(ids), "attention_mask": jax.device_put(np.ones_like(ids))}
    options = models.compiler_options("masked_lm") if compiler_options is None else compiler_options
    self.jitted = jax.jit(step, donate_argnums=(0,) if donate else (), compiler_options=options)
    self.compiled = None
    self.tokens = batch * length

  def compile(self) -> float:
    """Seconds to lower and compile the step (tracing included)."""
    start = time.perf_counter()
    self.compiled = self.jitted.lower(self.state, self.teacher_params, self.batch).compile()
    return time.perf_counter() - start

  def run(self):
    import jax
    self.state, metrics = self.compiled(self.state, self.teacher_params, self.batch)
    return jax.block_until_ready(metrics)


def _relayout(config):
  from distilbert_jax import convert
  return convert.stack_layers if config.scan_layers else convert.unstack_layers


class TorchDistillation:
  """The original trainer's step (transformers examples/research_projects/distillation,
  distiller.py `Distiller.prepare_batch_mlm`, `step` and `optimize`) with its defaults for the
  released model: MLM masking on the host, student forward, teacher forward under no_grad,
  5.0 loss_ce (KLDiv batchmean x T^2 over real tokens, or masked ones with
  restrict_ce_to_mask) + 2.0 loss_mlm + 1.0 loss_cos, backward, clip_grad_norm 5, AdamW,
  linear schedule."""

  def __init__(self, batch: int, length: int, teacher_state_dict=None, student_state_dict=None,
               student_hf_config=None, restrict_ce_to_mask: bool = False, seed: int = 0):
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
    self.temperature, self.alpha_ce, self.alpha_mlm, self.alpha_cos = 2.0, 5.0, 2.0, 1.0
    self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6,
                                       weight_decay=0.0)
    self.scheduler = transformers.get_linear_schedule_with_warmup(self.optimizer, 50, 1000)
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
    import torch.nn.functional as F
    input_ids, attention_mask, lm_labels = self.prepare_batch_mlm()
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
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.student.parameters(), 5.0)
    self.optimizer.step()
    self.optimizer.zero_grad()
    self.scheduler.step()
    return {"loss": loss.item(), "loss_ce": loss_ce.item(), "loss_mlm": loss_mlm.item(), "loss_cos": loss_cos.item()}


def training_section(batch: int, length: int, reps: int, variants: bool, overrides: dict) -> dict:
  """Our step and the PyTorch step on the same weights, alternated; then the variants that do
  less work (KL over masked tokens; plus the vocabulary projection at masked positions)."""
  import torch
  from distilbert_jax import convert

  t_teacher = torch_model("bert", "masked_lm")
  teacher_sd = {k: v.detach().numpy() for k, v in t_teacher.state_dict().items()}
  del t_teacher
  config = distillation_config(batch, length, **overrides)
  teacher_cfg = our_config("bert")
  teacher_params = convert.state_dict_to_params(teacher_sd, teacher_cfg, "masked_lm")

  contenders, jax_steps, compile_s = {}, {}, {}
  ours = JaxDistillation(config, teacher_params)
  student_sd = convert.params_to_state_dict(ours.student_params, ours.student_config, "masked_lm")
  student_hf = ours.student_config.to_hf_dict()
  student_hf = {k: v for k, v in student_hf.items() if k not in ("model_type", "architectures")}
  jax_steps["ours"] = ours
  contenders["torch"] = TorchDistillation(batch, length, teacher_sd, student_sd, student_hf)
  if variants:
    masked_config = distillation_config(batch, length, **{**overrides, "loss.ce_masked_only": True})
    jax_steps["ours/ce_masked_only"] = JaxDistillation(masked_config, teacher_params)
    jax_steps["ours/ce_masked_only+gathered_vocab"] = JaxDistillation(masked_config, teacher_params, gathered=True)
    contenders["torch/restrict_ce_to_mask"] = TorchDistillation(batch, length, teacher_sd, student_sd, student_hf,
                                                                restrict_ce_to_mask=True)
  for name, step in jax_steps.items():
    compile_s[name] = step.compile()
    contenders[name] = step

  # Same weights: one forward of each framework's student and teacher agree; and the first
  # steps' losses are printed side by side (they differ by the masking's random draw).
  check = _check_same_weights(ours, contenders["torch"])
  first = {name: {k: float(v) for k, v in c.run().items()} for name, c in contenders.items()}
  if variants:  # the gathered step must equal the full ce_masked_only step (same keys, same draw)
    full, gathered = first["ours/ce_masked_only"], first["ours/ce_masked_only+gathered_vocab"]
    check["gathered_vs_full_max_rel_diff"] = max(abs(gathered[k] - full[k]) / max(abs(full[k]), 1e-12)
                                                 for k in ("loss", "loss_ce", "loss_mlm", "loss_cos"))
  order = [n for n in ("ours", "torch", "ours/ce_masked_only", "torch/restrict_ce_to_mask",
                       "ours/ce_masked_only+gathered_vocab") if n in contenders]
  times = time_side_by_side({n: contenders[n].run for n in order}, reps, warmup=0)  # warmed up above
  rows = []
  baseline = {"ours": "torch", "ours/ce_masked_only": "torch/restrict_ce_to_mask",
              "ours/ce_masked_only+gathered_vocab": "torch/restrict_ce_to_mask"}
  for name in order:
    step_s = median(times[name])
    row = dict(name=name, step_s=step_s, tokens_per_s=batch * length / step_s, times=times[name],
               first_step_losses=first[name], compile_s=compile_s.get(name), load_average=os.getloadavg()[0])
    if name in baseline:
      row["vs_torch"] = median(times[baseline[name]]) / step_s
      row["torch_baseline"] = baseline[name]
    rows.append(row)
  print("  training: " + ", ".join(f"{r['name']} {r['step_s']:.2f}s" for r in rows), flush=True)
  return dict(batch=batch, length=length, rows=rows, checks=check,
              config_overrides={k: str(v) for k, v in overrides.items()})


def _check_same_weights(ours: JaxDistillation, theirs: TorchDistillation) -> dict:
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


# ----------------------------------------------------------------------------- memory, one process each
def memory_probe(kind: str, batch: int, length: int, overrides: dict) -> dict:
  """Runs in a fresh process (see `measure_memory`): peak resident memory of one contender,
  with no other framework imported. Weights are random (same shapes as in the timing)."""
  after_import = None
  if kind == "torch":
    import torch  # pylint: disable=unused-import
    import transformers  # pylint: disable=unused-import
    after_import = memory_status()["VmRSS"]
    step = TorchDistillation(batch, length)
    before = memory_status()["VmRSS"]
    reset_peak_rss()
    for _ in range(2):  # AdamW allocates its moments in the first step
      step.run()
    return dict(kind=kind, rss_after_import=after_import, rss_before_steps=before,
                peak_rss=memory_status()["VmHWM"])
  import jax
  after_import = memory_status()["VmRSS"]
  config = distillation_config(batch, length, **overrides)
  step = JaxDistillation(config)
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
  del jax
  return dict(kind=kind, rss_after_import=after_import, rss_before_steps=before, compile_peak_rss=compile_peak,
              compile_s=compile_s, peak_rss=memory_status()["VmHWM"], xla_memory_analysis=xla)


def measure_memory(kinds, batch: int, length: int, overrides: dict) -> dict:
  out = {}
  for kind in kinds:
    cmd = [sys.executable, __file__, "--memory-probe", kind, "--train-batch", str(batch),
           "--train-length", str(length), "--overrides", json.dumps(overrides)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("MEMORY ")]
    if result.returncode or not lines:
      out[kind] = {"error": result.stderr[-2000:]}
    else:
      out[kind] = json.loads(lines[-1][len("MEMORY "):])
  return out


# ===================================================================================== 4: accelerator
def accelerator_section(force: bool, quick: bool) -> dict:
  """bfloat16 tokens/s and MFU on a GPU/TPU; on a CPU only a line saying it was skipped (or,
  with --force-accelerator-section, the same code on tiny shapes to check that it runs)."""
  import jax
  import jax.numpy as jnp
  from distilbert_jax import flops, models

  backend = jax.default_backend()
  if backend == "cpu" and not force:
    return {"skipped": f"no GPU or TPU: jax backend is {backend!r} ({jax.devices()[0].device_kind})"}
  on_cpu = backend == "cpu"
  batch, length = (2, 32) if on_cpu else (256, 128)
  reps = 3 if on_cpu or quick else 10
  out = {"backend": backend, "device_kind": jax.devices()[0].device_kind, "inference": [], "training": None}
  for arch in ARCHS:
    config = our_config(arch, scan_layers=True, attention_impl="dot_product")
    model = models.get_model(config, "masked_lm", dtype=jnp.bfloat16)
    params = init_params(model)
    forward = jax.jit(lambda p, ids, mask, model=model: model.apply({"params": p}, ids, attention_mask=mask).logits)
    ids = jax.device_put(make_input_ids(batch, length))
    mask = jnp.ones_like(ids)
    times = time_side_by_side({arch: lambda: jax.block_until_ready(forward(params, ids, mask))}, reps)[arch]
    tps = batch * length / median(times)
    out["inference"].append(dict(arch=arch, batch=batch, length=length, step_s=median(times), tokens_per_s=tps,
                                 mfu=flops.estimate_mfu(flops.forward_flops_per_token(config, length, True), tps)))
  config = distillation_config(batch, length, **{"teacher.dtype": "bfloat16", "student.dtype": "bfloat16"})
  step = JaxDistillation(config)
  compile_s = step.compile()
  step.run()
  times = time_side_by_side({"step": step.run}, reps)["step"]
  tps = batch * length / median(times)
  per_token = flops.distillation_flops_per_token(step.student_config, step.teacher_config, length, True, True)
  out["training"] = dict(batch=batch, length=length, step_s=median(times), tokens_per_s=tps, compile_s=compile_s,
                         mfu=flops.estimate_mfu(per_token, tps))
  return out


# ===================================================================================== roofline
ROOFLINE_MATMULS = ((1024, 768, 768), (1024, 768, 3072), (1024, 3072, 768), (1024, 768, 30522))


def roofline_section(reps: int, results: dict) -> dict:
  """How far float32 speed can go here: the matrix products of these models at 1,024 tokens in
  each framework alone (GFLOP/s), against the model FLOP rate each framework reaches end to end
  (flops.py counts), and the rate a target ratio would need."""
  import jax
  import jax.numpy as jnp
  import torch
  from distilbert_jax import flops

  matmuls = []
  for m, k, n in ROOFLINE_MATMULS:
    rs = np.random.RandomState(0)
    a, b = rs.randn(m, k).astype(np.float32), rs.randn(k, n).astype(np.float32)
    ja, jb = jax.device_put(a), jax.device_put(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    product = jax.jit(jnp.dot)

    def theirs(ta=ta, tb=tb):
      with torch.inference_mode():
        return ta @ tb
    times = time_side_by_side({"ours": lambda: jax.block_until_ready(product(ja, jb)), "torch": theirs}, reps)
    flop = 2.0 * m * k * n
    matmuls.append(dict(shape=f"[{m},{k}] x [{k},{n}]", ours_s=median(times["ours"]), torch_s=median(times["torch"]),
                        ours_gflops=flop / median(times["ours"]) / 1e9, torch_gflops=flop / median(times["torch"]) / 1e9))
  best = max(max(r["ours_gflops"], r["torch_gflops"]) for r in matmuls)
  workloads = []
  for r in results.get("inference", []):
    if r["head"] != "base" or r["arch"] != "distilbert" or (r["batch"], r["length"]) not in ((8, 128), (32, 128)):
      continue
    gflop = flops.forward_flops_per_token(our_config("distilbert"), r["length"], with_mlm_head=False) * r["batch"] * r["length"] / 1e9
    workloads.append(dict(name=f"DistilBERT-base forward {r['batch']}x{r['length']}", gflop=gflop, target=1.5,
                          ours_gflops=gflop / r["ours_s"], torch_gflops=gflop / r["torch_s"]))
  training = (results.get("training") or {}).get("rows", [])
  rows = {row["name"]: row for row in training}
  if "ours" in rows and "torch" in rows:
    tokens = results["training"]["batch"] * results["training"]["length"]
    per_token = flops.distillation_flops_per_token(our_config("distilbert"), our_config("bert"),
                                                   results["training"]["length"], True, True)
    gflop = per_token * tokens / 1e9
    workloads.append(dict(name=f"distillation step {results['training']['batch']}x{results['training']['length']}",
                          gflop=gflop, target=1.6, ours_gflops=gflop / rows["ours"]["step_s"],
                          torch_gflops=gflop / rows["torch"]["step_s"]))
  for w in workloads:
    w["needed_gflops"] = w["target"] * w["torch_gflops"]
    w["needed_vs_best_matmul"] = w["needed_gflops"] / best
  print(f"  roofline: best float32 matmul {best:.0f} GFLOP/s; " + ", ".join(
      f"{w['name']} needs {w['needed_gflops']:.0f}" for w in workloads), flush=True)
  return dict(matmuls=matmuls, best_matmul_gflops=best, workloads=workloads)


# ===================================================================================== levers

# ----------------------------------------------------------------------------- lever: fused QKV
def fused_qkv_modules():
  """Self-attention modules that compute query, key and value with ONE [hidden, 3 * hidden]
  matmul (the three kernels concatenated at run time; parameter names and shapes unchanged,
  so the same parameters load). Proposed for models/; measured here by monkeypatching."""
  import flax.linen as nn
  import jax.numpy as jnp
  from distilbert_jax.models import bert, distilbert, layers

  class _Projection(nn.Module):
    """The kernel and bias of one nn.Dense, under the Dense's own name."""
    in_features: int
    features: int
    initializer_range: float
    param_dtype: object = jnp.float32

    @nn.compact
    def __call__(self):
      kernel = self.param("kernel", layers.normal_init(self.initializer_range, ("embed", "heads")),
                          (self.in_features, self.features), self.param_dtype)
      bias = self.param("bias", layers.zeros_init(("heads",)), (self.features,), self.param_dtype)
      return kernel, bias

  def qkv(module, hidden, names, width, num_heads):
    projections = [_Projection(width, width, module.config.initializer_range, module.param_dtype, name=n)()
                   for n in names]
    kernel = jnp.concatenate([k for k, _ in projections], axis=1).astype(module.dtype)
    bias = jnp.concatenate([b for _, b in projections]).astype(module.dtype)
    fused = jnp.dot(hidden.astype(module.dtype), kernel) + bias
    return [layers.split_heads(x, num_heads) for x in jnp.split(fused, 3, axis=-1)]

  class FusedDistilBertSelfAttention(distilbert.MultiHeadSelfAttention):
    @nn.compact
    def __call__(self, hidden, attention_mask, deterministic: bool, output_attentions: bool):
      c = self.config
      q, k, v = qkv(self, hidden, ("q_lin", "k_lin", "v_lin"), c.dim, c.n_heads)
      context, probs = layers.multi_head_attention(
          self, q, k, v, attention_mask, dropout_rate=c.attention_dropout, deterministic=deterministic,
          implementation=c.attention_impl, output_attentions=output_attentions)
      return layers.dense(c.dim, ("heads", "embed"), c, self.dtype, self.param_dtype, "out_lin")(context), probs

  class FusedBertSelfAttention(bert.BertSelfAttention):
    @nn.compact
    def __call__(self, hidden, attention_mask, deterministic: bool, output_attentions: bool):
      c = self.config
      q, k, v = qkv(self, hidden, ("query", "key", "value"), c.hidden_size, c.num_attention_heads)
      return layers.multi_head_attention(
          self, q, k, v, attention_mask, dropout_rate=c.attention_probs_dropout_prob,
          deterministic=deterministic, implementation=c.attention_impl, output_attentions=output_attentions)

  return FusedDistilBertSelfAttention, FusedBertSelfAttention


class fused_qkv:  # pylint: disable=invalid-name
  """Context manager: while active, newly traced models use the fused-QKV attention modules
  (compile inside it: Flax looks the module classes up while tracing)."""

  def __enter__(self):
    from distilbert_jax.models import bert, distilbert
    self.saved = distilbert.MultiHeadSelfAttention, bert.BertSelfAttention
    distilbert.MultiHeadSelfAttention, bert.BertSelfAttention = fused_qkv_modules()
    return self

  def __exit__(self, *exc):
    from distilbert_jax.models import bert, distilbert
    distilbert.MultiHeadSelfAttention, bert.BertSelfAttention = self.saved


@contextlib.contextmanager
def autodiff_vocab_head():
  """While active, newly traced programs differentiate the tied vocabulary projection and the KL
  loss by autodiff of their forward formulas (the code before layers.tied_projection and
  losses._kl_rows had hand-written backward passes)."""
  import jax.numpy as jnp
  from distilbert_jax import losses
  from distilbert_jax.models import layers
  saved = layers.tied_projection, losses._kl_rows  # pylint: disable=protected-access
  layers.tied_projection = lambda hidden, embedding, bias: jnp.dot(hidden, embedding.T) + bias
  losses._kl_rows = lambda s, t, temperature: losses._kl_rows_fwd(s, t, temperature)[0]  # pylint: disable=protected-access
  try:
    yield
  finally:
    layers.tied_projection, losses._kl_rows = saved  # pylint: disable=protected-access


def levers_section(reps: int) -> dict:
  """Each lever against our chosen setting, alternated in one process: inference (DistilBERT-base
  at 8x128 and 32x128) and the distillation step (8x128)."""
  import jax
  import jax.numpy as jnp
  from distilbert_jax import convert, models

  out = {}
  t_model = torch_model("distilbert", "base")
  for batch, length in ((8, 128), (32, 128)):
    ids = jax.device_put(make_input_ids(batch, length))
    mask = jnp.ones_like(ids)
    contenders = {}

    def add(name, config, precision=None, fused=False, options=None):
      params = our_params_from_torch(t_model, config, "base")
      model = models.get_model(config, "base")
      forward = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m),
                        compiler_options=models.compiler_options("base") if options is None else options)
      with jax.default_matmul_precision(precision), (fused_qkv() if fused else contextlib.nullcontext()):
        compiled = forward.lower(params, ids, mask).compile()  # traced here: precision and modules apply
      contenders[name] = lambda: jax.block_until_ready(compiled(params, ids, mask))

    add("unrolled/xla (ours)", our_config("distilbert"))
    add("XLA's default CPU options (YNNPACK fusions on)", our_config("distilbert"), options={})
    add("scan over layers", our_config("distilbert", scan_layers=True))
    add("jax.nn.dot_product_attention", our_config("distilbert", attention_impl="dot_product"))
    add("fused QKV matmul", our_config("distilbert"), fused=True)
    add("matmul precision bfloat16", our_config("distilbert"), precision="bfloat16")
    times = time_side_by_side(contenders, reps)
    out[f"inference_distilbert_base_{batch}x{length}"] = {n: dict(median_s=median(t), times=t) for n, t in times.items()}
    print(f"  levers inference {batch}x{length}: " + ", ".join(f"{n} {median(t):.3f}s" for n, t in times.items()),
          flush=True)
    del contenders
  del t_model

  # The masked-LM forward at 1 x 128: why compiler_options("masked_lm") keeps XLA's defaults.
  t_model = torch_model("distilbert", "masked_lm")
  config = our_config("distilbert")
  params = our_params_from_torch(t_model, config, "masked_lm")
  model = models.get_model(config, "masked_lm")
  ids = jax.device_put(make_input_ids(1, 128))
  mask = jnp.ones_like(ids)
  contenders = {}
  for name, options in (("XLA's default CPU options (ours for masked_lm)", models.compiler_options("masked_lm")),
                        ("YNNPACK fusions off", {"xla_cpu_experimental_ynn_fusion_type": ""})):
    compiled = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m),
                       compiler_options=options).lower(params, ids, mask).compile()
    contenders[name] = lambda compiled=compiled: jax.block_until_ready(compiled(params, ids, mask))
  times = time_side_by_side(contenders, reps)
  out["inference_distilbert_masked_lm_1x128"] = {n: dict(median_s=median(t), times=t) for n, t in times.items()}
  print("  levers masked_lm 1x128: " + ", ".join(f"{n} {median(t):.3f}s" for n, t in times.items()), flush=True)
  del contenders, t_model

  t_teacher = torch_model("bert", "masked_lm")
  teacher_sd = {k: v.detach().numpy() for k, v in t_teacher.state_dict().items()}
  del t_teacher
  teacher_params = convert.state_dict_to_params(teacher_sd, our_config("bert"), "masked_lm")
  steps = {}
  for name, overrides, donate, context, options in (
      ("unrolled/xla (ours)", _unrolled_xla(), True, None, None),
      ("scan/dot_product (configs/distilbert_base.py)", {"teacher.scan_layers": True, "student.scan_layers": True,
        "teacher.attention_impl": "dot_product", "student.attention_impl": "dot_product"}, True, None, None),
      ("YNNPACK fusions off", _unrolled_xla(), True, None, {"xla_cpu_experimental_ynn_fusion_type": ""}),
      ("autodiff vocabulary head and KL", _unrolled_xla(), True, autodiff_vocab_head, None),
      ("teacher in bfloat16", {**_unrolled_xla(), "teacher.dtype": "bfloat16"}, True, None, None),
      ("no buffer donation", _unrolled_xla(), False, None, None)):
    with context() if context else contextlib.nullcontext():
      step = JaxDistillation(distillation_config(8, 128, **overrides), teacher_params, donate=donate,
                             compiler_options=options)
      compile_s = step.compile()
    step.run()
    steps[name] = (step, compile_s)
  times = time_side_by_side({n: s.run for n, (s, _) in steps.items()}, reps, warmup=0)
  out["training_8x128"] = {n: dict(median_s=median(t), compile_s=steps[n][1], times=t) for n, t in times.items()}
  print("  levers training: " + ", ".join(f"{n} {median(t):.2f}s" for n, t in times.items()), flush=True)
  return out


def _unrolled_xla() -> dict:
  return {"teacher.scan_layers": False, "student.scan_layers": False,
          "teacher.attention_impl": "xla", "student.attention_impl": "xla"}


FLAG_SETTINGS = (
    "",
    "--xla_cpu_experimental_ynn_fusion_type=",  # no YNNPACK fusions: dots go to Eigen
    "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_experimental_xnn_fusion_type=dot",
    "--xla_cpu_experimental_onednn_fusion_type=dot",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_use_xnnpack=false",
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_use_thunk_runtime=false",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_prefer_vector_width=512",
    "--xla_cpu_enable_concurrency_optimized_scheduler=false",
)
FLAG_WORKLOADS = (("base", 8, 128), ("masked_lm", 8, 128), ("base", 32, 128))


def flag_probe(reps: int) -> dict:
  """In a process started with XLA_FLAGS: DistilBERT-base forwards (unrolled, XLA attention)."""
  import jax
  import jax.numpy as jnp
  from distilbert_jax import models
  config = our_config("distilbert")
  out = {}
  for head, batch, length in FLAG_WORKLOADS:
    model = models.get_model(config, head)
    params = init_params(model)
    ids = jax.device_put(make_input_ids(batch, length))
    mask = jnp.ones_like(ids)
    forward = jax.jit(lambda p, i, m, model=model: model.apply({"params": p}, i, attention_mask=m))
    start = time.perf_counter()
    compiled = forward.lower(params, ids, mask).compile()
    compile_s = time.perf_counter() - start
    times = time_side_by_side({"f": lambda: jax.block_until_ready(compiled(params, ids, mask))}, reps)["f"]
    out[f"{head} {batch}x{length}"] = dict(compile_s=compile_s, median_s=median(times), times=times)
  out["load_average"] = os.getloadavg()[0]
  return out


def xla_flag_sweep(reps: int, rounds: int = 2) -> list[dict]:
  """One process per flag setting, the settings alternated over `rounds` rounds (forward, then
  reversed); a flag this jaxlib does not know makes its process fail, recorded as such."""
  results = {flags: [] for flags in FLAG_SETTINGS}
  errors = {}
  for r in range(rounds):
    for flags in (FLAG_SETTINGS if r % 2 == 0 else FLAG_SETTINGS[::-1]):
      env = dict(os.environ, XLA_FLAGS=flags)
      cmd = [sys.executable, __file__, "--flag-probe", "--reps", str(reps)]
      result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=ROOT)
      lines = [line for line in result.stdout.splitlines() if line.startswith("FLAGPROBE ")]
      if result.returncode or not lines:
        errors[flags] = (result.stderr.strip().splitlines() or ["no output"])[-1][:200]
        continue
      results[flags].append(json.loads(lines[-1][len("FLAGPROBE "):]))
      print(f"  XLA_FLAGS={flags!r}: " + ", ".join(
          f"{w} {results[flags][-1][w]['median_s'] * 1e3:.0f} ms" for w in _workload_names()), flush=True)
  rows = []
  base = {w: median([p[w]["median_s"] for p in results[""]]) for w in _workload_names()} if results[""] else None
  for flags in FLAG_SETTINGS:
    if not results[flags]:
      rows.append(dict(flags=flags, error=errors.get(flags, "no result")))
      continue
    row = dict(flags=flags or "(none)", load_average=max(p["load_average"] for p in results[flags]))
    for w in _workload_names():
      m = median([p[w]["median_s"] for p in results[flags]])
      row[w] = dict(median_s=m, speedup_vs_default=base[w] / m if base else None,
                    compile_s=median([p[w]["compile_s"] for p in results[flags]]),
                    process_medians=[p[w]["median_s"] for p in results[flags]])
    rows.append(row)
  return rows


def _workload_names():
  return [f"{head} {batch}x{length}" for head, batch, length in FLAG_WORKLOADS]


# ===================================================================================== report
def environment() -> dict:
  import jax
  import jaxlib
  import torch
  import transformers
  return dict(cpu=cpu_name(), cores=cpu_threads(), jax=jax.__version__, jaxlib=jaxlib.__version__,
              torch=torch.__version__, transformers=transformers.__version__, backend=jax.default_backend(),
              xla_flags=os.environ.get("XLA_FLAGS", ""), torch_threads=torch.get_num_threads(),
              torch_attention=hf_config("bert")._attn_implementation or "sdpa",  # pylint: disable=protected-access
              python=platform.python_version(), load_average_start=os.getloadavg(),
              malloc=os.environ.get("LD_PRELOAD") or "system (glibc)", cpu_jiffies_start=cpu_jiffies())


def cpu_jiffies() -> dict:
  """Machine-wide CPU time from /proc/stat: busy, idle and steal (time the hypervisor gave to
  other guests), in jiffies; empty where there is no /proc/stat."""
  try:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
  except OSError:
    return {}
  user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
  return dict(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal)


def steal_percent(env: dict) -> Optional[float]:
  start, end = env.get("cpu_jiffies_start"), env.get("cpu_jiffies_end")
  if not start or not end:
    return None
  total = sum(end[k] - start[k] for k in ("busy", "idle", "steal"))
  return 100.0 * (end["steal"] - start["steal"]) / max(total, 1)


TCMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
                  "/usr/lib64/libtcmalloc_minimal.so.4", "/usr/local/lib/libtcmalloc_minimal.so.4")


def reexec_with_tcmalloc() -> None:
  """Starts this script again with tcmalloc preloaded (both frameworks then allocate through it).
  glibc returns every buffer over 32 MiB to the kernel on free, so each step of either framework
  page-faults its large temporaries back in: 475k faults (1.9 GB) per distillation step here."""
  if "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
    return
  lib = next((p for p in TCMALLOC_PATHS if os.path.exists(p)), None)
  if lib is None:
    sys.exit("benchmark.py: --malloc tcmalloc: libtcmalloc_minimal.so.4 not found in "
             f"{', '.join(TCMALLOC_PATHS)} (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")
  os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "LD_PRELOAD": lib})


def ms(seconds: float) -> str:
  return f"{seconds * 1e3:,.0f}"


def format_report(results: dict) -> str:
  env = results["environment"]
  lines = [f"Machine: {env['cpu']}, {env['cores']} cores; jax {env['jax']} ({env['backend']}), torch "
           f"{env['torch']} with torch.get_num_threads() = {env['torch_threads']}, transformers "
           f"{env['transformers']} (attention: {env['torch_attention']}); XLA_FLAGS={env['xla_flags']!r}; "
           f"malloc: {env.get('malloc', 'system (glibc)')}; "
           f"load average {env['load_average_start'][0]:.1f} at start, {env['load_average_end'][0]:.1f} at end; "
           f"CPU time stolen by the hypervisor during the run: "
           f"{'-' if steal_percent(env) is None else f'{steal_percent(env):.1f}%'}; "
           f"{results['reps']} timed runs per figure after 1 warm-up (median); wall time "
           f"{results['wall_s'] / 60:.1f} min.", ""]
  loads = [r["load_average"] for r in results.get("inference", []) + (results.get("training") or {}).get("rows", [])]
  loads += [env["load_average_start"][0], env["load_average_end"][0]]
  if max(loads) > 1.5 + 0.25 * env["cores"]:  # our own run accounts for about one
    lines += [f"**Warning: the machine was shared (1-minute load average up to {max(loads):.1f} on {env['cores']} "
              "cores; `load` column).** Co-tenant load slows PyTorch more than XLA (an OpenMP parallel region "
              "waits for its slowest thread at every op; XLA's thread pool splits work into many small tasks), "
              "so ratios measured under load overstate ours. Re-run on a quiet machine.", ""]
  if results.get("inference"):
    lines += ["### 1. Inference, float32, ours (jit) vs transformers PyTorch (inference_mode)", "",
              "| model | head | batch x length | ours ms | PyTorch ms | speed-up | ours tokens/s | max abs diff | load |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["inference"]:
      diff = f"{r['max_abs_diff']:.1e}" if r["max_abs_diff"] is not None else "-"
      lines.append(f"| {r['arch']} | {r['head']} | {r['batch']}x{r['length']} | {ms(r['ours_s'])} | "
                   f"{ms(r['torch_s'])} | **{r['speedup']:.2f}x** | {r['ours_tokens_per_s']:,.0f} | {diff} | "
                   f"{r['load_average']:.1f} |")
    lines += ["", "### 2. Student vs teacher (ours): DistilBERT-base vs BERT-base", "",
              "| head | batch x length | DistilBERT ms | BERT ms | throughput ratio | (PyTorch's ratio) | "
              "parameters | param ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["student_teacher"]:
      lines.append(f"| {r['head']} | {r['batch']}x{r['length']} | {ms(r['student_s'])} | {ms(r['teacher_s'])} | "
                   f"**{r['throughput_ratio']:.2f}x** | {r['torch_throughput_ratio']:.2f}x | "
                   f"{r['student_params'] / 1e6:.1f}M / {r['teacher_params'] / 1e6:.1f}M | "
                   f"{r['param_ratio']:.2f} ({1 - r['param_ratio']:.0%} fewer) |")
  if results.get("training"):
    t = results["training"]
    lines += ["", f"### 3. Distillation step, float32, batch {t['batch']} x {t['length']} "
              f"(BERT-base teacher, DistilBERT-base student)", "",
              "| step | ms | tokens/s | vs PyTorch | compile s | peak RSS (own process) | load |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    memory = results.get("memory") or {}
    for r in t["rows"]:
      ratio = f"**{r['vs_torch']:.2f}x** vs {r['torch_baseline']}" if "vs_torch" in r else "-"
      compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") else "-"
      mem = memory.get({"ours": "jax", "torch": "torch"}.get(r["name"], ""), {})
      peak = f"{mem['peak_rss'] / 2**30:.2f} GiB" if "peak_rss" in mem else "-"
      lines.append(f"| {r['name']} | {ms(r['step_s'])} | {r['tokens_per_s']:,.0f} | {ratio} | {compile_s} | {peak} | "
                   f"{r['load_average']:.1f} |")
    lines.append("")
    lines.append("Same weights: " + ", ".join(f"{k} {v:.1e}" for k, v in t["checks"].items()) + ".")
    lines.append("First-step losses: " + "; ".join(
        f"{r['name']} " + " ".join(f"{k}={v:.3f}" for k, v in r["first_step_losses"].items()
                                   if k in ("loss", "loss_ce", "loss_mlm", "loss_cos")) for r in t["rows"]) + ".")
    for kind, mem in memory.items():
      if "error" in mem:
        lines.append(f"Memory probe {kind} failed: {mem['error'].splitlines()[-1] if mem['error'] else '?'}")
        continue
      text = (f"Memory ({kind}, own process, VmHWM): {mem['peak_rss'] / 2**30:.2f} GiB peak over 2 steps, "
              f"{mem['rss_before_steps'] / 2**30:.2f} GiB resident before them, "
              f"{mem['rss_after_import'] / 2**30:.2f} GiB after imports")
      if mem.get("compile_peak_rss"):
        text += f"; {mem['compile_peak_rss'] / 2**30:.2f} GiB peak while compiling"
      if mem.get("xla_memory_analysis"):
        a = mem["xla_memory_analysis"]
        text += (f"; XLA buffer assignment: arguments {a['argument_bytes'] / 2**30:.2f} GiB, temporaries "
                 f"{a['temp_bytes'] / 2**30:.2f} GiB, outputs {a['output_bytes'] / 2**30:.2f} GiB "
                 f"({a['alias_bytes'] / 2**30:.2f} GiB aliased to donated inputs)")
      lines.append(text + ".")
  acc = results.get("accelerator") or {}
  if acc:
    lines += ["", "### 4. Accelerator (bfloat16)", ""]
  if "skipped" in acc:
    lines.append(f"Skipped: {acc['skipped']}.")
  elif acc:
    lines += ["| what | batch x length | ms | tokens/s | MFU |", "|---|---|---:|---:|---:|"]
    for r in acc["inference"]:
      mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (unknown peak)"
      lines.append(f"| {r['arch']} MLM forward | {r['batch']}x{r['length']} | {ms(r['step_s'])} | "
                   f"{r['tokens_per_s']:,.0f} | {mfu} |")
    r = acc["training"]
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (unknown peak)"
    lines.append(f"| distillation step | {r['batch']}x{r['length']} | {ms(r['step_s'])} | {r['tokens_per_s']:,.0f} "
                 f"| {mfu} |")
  if results.get("roofline"):
    roof = results["roofline"]
    lines += ["", "### CPU roofline, float32: each framework's matrix products alone, and what the targets need", "",
              "| matrix product | ours ms | PyTorch ms | ours GFLOP/s | PyTorch GFLOP/s |", "|---|---:|---:|---:|---:|"]
    for r in roof["matmuls"]:
      lines.append(f"| {r['shape']} | {r['ours_s'] * 1e3:.1f} | {r['torch_s'] * 1e3:.1f} | {r['ours_gflops']:.0f} | "
                   f"{r['torch_gflops']:.0f} |")
    lines += ["", f"Best matrix-product rate measured (either framework): **{roof['best_matmul_gflops']:.0f} GFLOP/s**.",
              "", "| workload | model GFLOP (flops.py) | ours GFLOP/s | PyTorch GFLOP/s | target | GFLOP/s the target "
              "needs | ... over the best matmul rate |", "|---|---:|---:|---:|---:|---:|---:|"]
    for w in roof["workloads"]:
      lines.append(f"| {w['name']} | {w['gflop']:.1f} | {w['ours_gflops']:.0f} | {w['torch_gflops']:.0f} | "
                   f"{w['target']}x | {w['needed_gflops']:.0f} | **{w['needed_vs_best_matmul']:.0%}** |")
  if results.get("levers"):
    lines += ["", "### Levers (side by side in one process; the first row of each group is our setting)", "",
              "| what | variant | median ms | ours / variant time | compile s |", "|---|---|---:|---:|---:|"]
    for what, variants in results["levers"].items():
      reference = next(iter(variants.values()))["median_s"]
      for name, v in variants.items():
        compile_s = f"{v['compile_s']:.1f}" if "compile_s" in v else "-"
        lines.append(f"| {what} | {name} | {ms(v['median_s'])} | {reference / v['median_s']:.2f} | {compile_s} |")
  if results.get("xla_flag_sweep"):
    names = _workload_names()
    lines += ["", "### XLA CPU flags (DistilBERT-base forward, one process per setting, settings alternated)", "",
              "| XLA_FLAGS | " + " | ".join(f"{n} ms (vs none)" for n in names) + " | max load |",
              "|---|" + "---:|" * len(names) + "---:|"]
    for r in results["xla_flag_sweep"]:
      if "error" in r:
        lines.append(f"| `{r['flags']}` | failed: {r['error']} |" + " |" * len(names))
        continue
      cells = [f"{ms(r[n]['median_s'])} ({r[n]['speedup_vs_default']:.2f}x)" for n in names]
      lines.append(f"| `{r['flags']}` | " + " | ".join(cells) + f" | {r['load_average']:.1f} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="8x128 only, fewer variants: about 2 minutes")
  parser.add_argument("--full", action="store_true", help="MLM heads at every shape too (about 20 minutes)")
  parser.add_argument("--out", default="BENCH.json", help="where the JSON goes")
  parser.add_argument("--reps", type=int, default=3, help="timed runs per figure (after one warm-up)")
  parser.add_argument("--sections", default="inference,training,memory,roofline,accelerator",
                      help="comma-separated subset of inference,training,memory,roofline,accelerator")
  parser.add_argument("--levers", action="store_true", help="also time the compile levers")
  parser.add_argument("--xla-flag-sweep", action="store_true", help="also time XLA CPU flags (subprocesses)")
  parser.add_argument("--force-accelerator-section", action="store_true",
                      help="run section 4's code on CPU with tiny shapes (to check it runs)")
  parser.add_argument("--xla-flags", default=None,
                      help="XLA_FLAGS for this run (default: the environment's); e.g. "
                           "'--xla_cpu_experimental_ynn_fusion_type=' (see BENCHMARKS.md)")
  parser.add_argument("--malloc", choices=("system", "tcmalloc"), default="system",
                      help="tcmalloc: re-run this script with libtcmalloc_minimal preloaded, for both "
                           "frameworks (see BENCHMARKS.md: fewer page faults, less noise)")
  parser.add_argument("--train-batch", type=int, default=8)
  parser.add_argument("--train-length", type=int, default=128)
  parser.add_argument("--overrides", default="{}", help="JSON {section.field: value} for the distillation config")
  parser.add_argument("--memory-probe", choices=("jax", "torch"), help=argparse.SUPPRESS)
  parser.add_argument("--flag-probe", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.malloc == "tcmalloc":
    reexec_with_tcmalloc()
  overrides = json.loads(args.overrides)
  if args.xla_flags is not None:  # before jax creates its CPU client; memory probes inherit it
    os.environ["XLA_FLAGS"] = args.xla_flags

  if args.memory_probe:  # a child process of measure_memory
    print("MEMORY " + json.dumps(memory_probe(args.memory_probe, args.train_batch, args.train_length, overrides)))
    return
  if args.flag_probe:  # a child process of xla_flag_sweep
    print("FLAGPROBE " + json.dumps(flag_probe(args.reps)))
    return

  import torch
  torch.set_num_threads(cpu_threads())  # XLA's CPU client runs one thread per available core
  start = time.perf_counter()
  sections = set(args.sections.split(","))
  results = {"environment": environment(), "reps": args.reps, "argv": sys.argv[1:]}
  print(f"benchmark: {results['environment']['cpu']}, {cpu_threads()} cores, torch threads "
        f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}", flush=True)
  if "inference" in sections:
    if args.quick:
      shapes, heads = {"base": [(8, 128)], "masked_lm": [(8, 128)]}, ("base", "masked_lm")
    elif args.full:
      shapes, heads = {"base": SHAPES, "masked_lm": SHAPES}, ("base", "masked_lm")
    else:
      shapes, heads = {"base": SHAPES, "masked_lm": ((1, 128), (8, 128))}, ("base", "masked_lm")
    rows = []
    for head in heads:
      rows += inference_section(shapes[head], (head,), args.reps, {})
    results["inference"] = rows
    results["student_teacher"] = student_teacher_rows(rows)
  if "training" in sections:
    results["training"] = training_section(args.train_batch, args.train_length, args.reps,
                                           variants=not args.quick, overrides=overrides)
  if "memory" in sections and not args.quick:
    results["memory"] = measure_memory(("jax", "torch"), args.train_batch, args.train_length, overrides)
  if "accelerator" in sections:
    results["accelerator"] = accelerator_section(args.force_accelerator_section, args.quick)
  if "roofline" in sections and results["environment"]["backend"] == "cpu":
    results["roofline"] = roofline_section(args.reps, results)
  if args.levers:
    results["levers"] = levers_section(args.reps)
  if args.xla_flag_sweep:
    results["xla_flag_sweep"] = xla_flag_sweep(args.reps)
  results["environment"]["load_average_end"] = os.getloadavg()
  results["environment"]["cpu_jiffies_end"] = cpu_jiffies()
  results["wall_s"] = time.perf_counter() - start
  if args.out:  # first, so that the measurements survive a failure in the formatting
    Path(args.out).write_text(json.dumps(results, indent=1))
  print()
  print(format_report(results))
  if args.out:
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
