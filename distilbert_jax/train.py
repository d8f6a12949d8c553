"""Distillation (and teacher-free MLM pretraining): `train_and_evaluate(config, workdir)`.

One `jax.jit` program per step computes, over a (data, fsdp, tensor) device mesh: the dynamic
MLM masking, the frozen teacher's outputs, the student's losses and gradients (accumulated over
micro-batches), and the AdamW update. The original trainer (transformers'
examples/research_projects/distillation/distiller.py) instead masks on the host and runs teacher
and student as separate calls under DDP.

Losses (Sanh et al., 2019, section 3; weights `config.loss.alpha_*`):
  loss_ce: KL(teacher || student) at temperature T, times T^2, over real (or masked) tokens
  loss_mlm: cross-entropy on masked tokens
  loss_cos: 1 - cos(student, teacher) last hidden states, over real tokens
  loss_mse: squared error of the logits; loss_hidden: MSE of chosen hidden layers (TinyBERT)
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from distilbert_jax import convert, corpus, evaluate, flops, input_pipeline, losses, masking, models, sharding

LOSS_NAMES = ("ce", "mlm", "cos", "mse", "hidden")


class TrainingError(RuntimeError):
  """A run that cannot go on (a non-finite loss, an inconsistent config)."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any  # the student's parameters (float32 master copy)
  opt_state: Any
  rng: jax.Array  # uint32[2]; every step derives its keys with fold_in(rng, step)


# ===================================================================================== models
def _dtype(name: str):
  if name == "auto":  # bfloat16 where it is fast (GPU, TPU); float32 on CPU
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  return jnp.dtype(name)


def _compile_overrides(section: ml_collections.ConfigDict) -> dict:
  return dict(scan_layers=section.scan_layers, remat_policy=section.remat_policy,
              attention_impl=section.attention_impl)


def build_teacher(config) -> tuple[Optional[nn.Module], Any, Optional[models.ModelConfig]]:
  """The frozen teacher: from a checkpoint directory, random (tests, benchmarks), or none."""
  t = config.teacher
  dtype = _dtype(t.dtype)
  if t.path:
    model, params = convert.load_pretrained(t.path, head=t.head, dtype=dtype, **_compile_overrides(t))
    model_config = model.config
  elif t.random_config:
    model_config = dataclasses.replace(models.config_from_hf_dict(dict(t.random_config)), **_compile_overrides(t))
    model = models.get_model(model_config, t.head, dtype=dtype)
    params = _init_params(model, config.train.seed + 1)
  else:
    return None, None, None
  return model, params, model_config


def build_student(config, teacher_config, teacher_params):
  s = config.student
  head = "masked_lm" if _needs_logits(config) else "base"
  if s.init == "teacher":
    if teacher_params is None:
      raise TrainingError("student.init='teacher' needs a teacher (teacher.path or teacher.random_config)")
    student_config, params = convert.student_from_teacher(
        teacher_config, teacher_params, teacher_head=config.teacher.head,
        layers=tuple(s.layers) if s.layers else None, student_type=s.type, student_head=head,
        **{**_compile_overrides(s), **dict(s.config_overrides)})
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  elif s.init == "random":
    fields = dict(s.random_config) if s.random_config else teacher_config.to_hf_dict()
    fields.update(dict(s.config_overrides))
    student_config = dataclasses.replace(models.config_from_hf_dict(fields), **_compile_overrides(s))
    params = None
  else:
    raise TrainingError(f"student.init must be 'teacher' or 'random', got {s.init!r}")
  model = models.get_model(student_config, head, dtype=_dtype(s.dtype))
  if params is None:
    params = _init_params(model, config.train.seed)
  return model, params, student_config


def _init_params(model, seed: int) -> Any:
  ids = jnp.ones((1, 8), jnp.int32)
  return nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(seed), ids)["params"])


def _abstract_boxed_params(model) -> Any:
  ids = jnp.ones((1, 8), jnp.int32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), ids)["params"]


def _needs_logits(config) -> bool:
  l = config.loss
  return l.alpha_ce > 0 or l.alpha_mlm > 0 or l.alpha_mse > 0


# ===================================================================================== optimizer
def make_optimizer(config, num_steps: int):
  """AdamW with linear warm-up then linear decay and global-norm clipping (train.py of the
  original: betas (0.9, 0.98), eps 1e-6, warm-up 5%, clipping 5.0). Biases and LayerNorm
  parameters get no weight decay."""
  o = config.optim
  warmup = int(o.warmup_fraction * num_steps)
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, o.learning_rate, max(warmup, 1)),
       optax.linear_schedule(o.learning_rate, 0.0, max(num_steps - warmup, 1))], [warmup])
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: not any(getattr(k, "key", None) in ("bias", "scale") for k in path), params)
  tx = optax.chain(
      optax.clip_by_global_norm(o.grad_clip_norm),
      optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=decay_mask))
  return tx, schedule


# ===================================================================================== step
def apply_gradients(state: TrainState, grads, loss: jax.Array, tx: optax.GradientTransformation) -> TrainState:
  """One optimizer update and step + 1. A non-finite loss never reaches the parameters or the
  optimizer state (both keep their old values); the host stops the run when it sees it."""
  updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  return state.replace(step=state.step + 1, params=keep(new_params, state.params),
                       opt_state=keep(new_opt_state, state.opt_state))


def make_train_step(config, student, teacher, tx, schedule, token_probs, mask_token_id: int,
                    hidden_layer_map: tuple, mesh):
  """step(state, teacher_params, batch) -> (state, metrics). batch: input_ids and
  attention_mask [batch, length]. Metrics are scalars (loss terms already normalised)."""
  l, m = config.loss, config.mask
  accum = config.train.grad_accum_steps
  need_hidden = l.alpha_hidden > 0
  need_logits = _needs_logits(config)
  token_probs = jnp.asarray(token_probs)
  micro_sharding = sharding.NamedSharding(mesh, sharding.P(None, sharding.BATCH_AXES))

  def forward(params, teacher_params, micro, dropout_rng):
    kw = dict(attention_mask=micro["attention_mask"], output_hidden_states=need_hidden)
    student_out = student.apply({"params": params}, micro["input_ids"], deterministic=False,
                                rngs={"dropout": dropout_rng}, **kw)
    teacher_out = None
    if teacher is not None:
      teacher_out = jax.lax.stop_gradient(
          teacher.apply({"params": teacher_params}, micro["input_ids"], deterministic=True, **kw))
    real = micro["attention_mask"].astype(jnp.float32)
    ce_weights = micro["mlm_weights"] if l.ce_masked_only else real
    sums = {}
    if l.alpha_mlm > 0:
      sums["mlm"] = losses.masked_lm_loss(student_out.logits, micro["mlm_labels"], micro["mlm_weights"])[0]
    if teacher_out is not None:
      if l.alpha_ce > 0:
        sums["ce"] = losses.kl_div_loss(student_out.logits, teacher_out.logits, ce_weights, l.temperature)[0]
      if l.alpha_mse > 0:
        sums["mse"] = losses.mse_logits_loss(student_out.logits, teacher_out.logits, ce_weights)[0]
      if l.alpha_cos > 0:
        sums["cos"] = losses.cosine_embedding_loss(
            student_out.last_hidden_state, teacher_out.last_hidden_state, real)[0]
      if need_hidden:
        sums["hidden"] = sum(
            losses.hidden_mse_loss(student_out.hidden_states[s], teacher_out.hidden_states[t], real)[0]
            for s, t in hidden_layer_map)
    return sums

  def step(state: TrainState, teacher_params, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    mask_rng, dropout_rng = jax.random.split(rng)
    attention_mask = batch["attention_mask"]
    input_ids = batch["input_ids"].astype(jnp.int32)
    if m.mlm_probability > 0:
      masked = masking.mask_tokens(mask_rng, input_ids, attention_mask, token_probs,
                                   mask_token_id=mask_token_id, vocab_size=token_probs.shape[0],
                                   mlm_probability=m.mlm_probability, mask_prob=m.mask_prob,
                                   random_prob=m.random_prob)
      full = dict(input_ids=masked.input_ids, attention_mask=attention_mask,
                  mlm_labels=masked.mlm_labels, mlm_weights=masked.mlm_weights)
    else:
      full = dict(input_ids=input_ids, attention_mask=attention_mask, mlm_labels=input_ids,
                  mlm_weights=jnp.zeros(input_ids.shape, jnp.float32))

    # Denominators over the whole batch, so that k micro-batches equal one big batch exactly.
    real = jnp.sum(attention_mask.astype(jnp.float32))
    masked_count = jnp.sum(full["mlm_weights"])
    ce_rows = masked_count if l.ce_masked_only else real
    hidden_size = student.config.hidden_size
    denominators = {"ce": ce_rows, "mse": ce_rows, "mlm": masked_count, "cos": real,
                    "hidden": real * hidden_size * max(len(hidden_layer_map), 1)}
    alphas = {name: getattr(l, f"alpha_{name}") for name in LOSS_NAMES}

    def loss_fn(params, micro, micro_rng):
      sums = forward(params, teacher_params, micro, micro_rng)
      total = sum(alphas[k] * v / jnp.maximum(denominators[k], 1.0) for k, v in sums.items())
      return total, sums

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum == 1:
      (loss, sums), grads = grad_fn(state.params, full, dropout_rng)
    else:
      # Micro-batch j takes rows j, j + k, ...: each device keeps an equal share of every one.
      def split(x):
        x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, micro_sharding)
      micros = jax.tree.map(split, full)

      def body(carry, xs):
        micro, j = xs
        (loss_j, sums_j), grads_j = grad_fn(state.params, micro, jax.random.fold_in(dropout_rng, j))
        return jax.tree.map(jnp.add, carry, (loss_j, sums_j, grads_j)), None


      shapes = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micros), dropout_rng)
      zeros = jax.tree.map(lambda z: jnp.zeros(z.shape, z.dtype), ((shapes[0][0], shapes[0][1], shapes[1])))
      (loss, sums, grads), _ = jax.lax.scan(body, zeros, (micros, jnp.arange(accum)))

    new_state = apply_gradients(state, grads, loss, tx)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step),
               "real_tokens": real, "masked_tokens": masked_count}
    for name, value in sums.items():
      metrics[f"loss_{name}"] = value / jnp.maximum(denominators[name], 1.0)
    return new_state, metrics

  return step


# ===================================================================================== loop
def _resolve_data(config, workdir: Path, teacher_path: str) -> tuple[list[str], str, Optional[dict]]:
  """Source specs with `embedded` replaced by the generated standard-library corpus."""
  sources, embedded = [], None
  for spec in config.data.sources:
    if spec == "embedded":
      embedded = corpus.write_embedded_corpus(workdir / "corpus")
      spec = f"text:{embedded['train']}"
    sources.append(spec)
  tokenizer_dir = config.data.tokenizer_dir or teacher_path
  if not tokenizer_dir:
    raise TrainingError("data.tokenizer_dir is empty and there is no teacher.path to take it from")
  return sources, tokenizer_dir, embedded


def _hidden_layer_map(config, student_config, teacher_config) -> tuple:
  """(student hidden-state index, teacher hidden-state index) pairs; index 0 = embeddings."""
  if config.loss.hidden_layer_map:
    return tuple(tuple(p) for p in config.loss.hidden_layer_map)
  if config.loss.alpha_hidden <= 0 or teacher_config is None:
    return ()
  layers = convert.default_student_layers(teacher_config.num_hidden_layers, student_config.num_hidden_layers) \
      if not config.student.layers else tuple(config.student.layers)
  return tuple((i + 1, t + 1) for i, t in enumerate(layers))


class MetricsWriter:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, workdir: Path, start_step: int, enabled: bool):
    self.enabled = enabled
    if not enabled:
      return
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():  # after a resume, forget what the interrupted run logged past it
      kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= start_step]
      self.path.write_text("".join(line + "\n" for line in kept))
    from tensorboardX import SummaryWriter
    self.tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    with self.path.open("a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    for k, v in metrics.items():
      self.tb.add_scalar(k, v, step)
    self.tb.flush()

  def close(self):
    if self.enabled:
      self.tb.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) the distillation described by `config` in `workdir`.

  Returns the last logged metrics plus "export_dir" (Hugging Face format) when exported.
  """
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.train.multihost and not jax.distributed.is_initialized():
    # TPU pods and Slurm are detected by JAX; elsewhere (e.g. several processes on one machine)
    # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID say who is who.
    env = os.environ
    kwargs = ({"num_processes": int(env["JAX_NUM_PROCESSES"]), "process_id": int(env["JAX_PROCESS_ID"])}
              if "JAX_NUM_PROCESSES" in env else {})
    jax.distributed.initialize(**kwargs)
  is_main = jax.process_index() == 0
  if is_main:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

  # ----------------------------------------------------------------------------- mesh, models
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  logging.info("mesh: %s", dict(mesh.shape))
  teacher, teacher_params, teacher_config = build_teacher(config)
  student, student_params, student_config = build_student(config, teacher_config, teacher_params)
  if teacher is not None:
    # Only now (the student copied float32 layers): the frozen teacher in its compute dtype,
    # half the memory in bfloat16.
    teacher_params = jax.tree.map(lambda x: jnp.asarray(x, teacher.dtype), teacher_params)
  if teacher is None and any(getattr(config.loss, f"alpha_{n}") > 0 for n in ("ce", "cos", "mse", "hidden")):
    raise TrainingError("teacher-free training (no teacher) allows only loss.alpha_mlm > 0")

  # ----------------------------------------------------------------------------- data
  sources, tokenizer_dir, embedded = _resolve_data(config, workdir, config.teacher.path)
  d = config.data
  build_cache = functools.partial(
      input_pipeline.build_token_cache, sources, tokenizer_dir, d.cache_dir or str(workdir / "token_cache"),
      max_length=d.max_length, min_length=d.min_length, pack=d.pack, expected_vocab_size=student_config.vocab_size)
  if jax.process_count() > 1:  # one process tokenizes; the others then reuse its cache
    from jax.experimental import multihost_utils
    if is_main:
      build_cache()
    multihost_utils.sync_global_devices("token_cache")
  cache = build_cache()
  if cache.vocab_size != student_config.vocab_size:
    raise TrainingError(f"tokenizer at {tokenizer_dir} has {cache.vocab_size} tokens but the student's "
                        f"vocabulary has {student_config.vocab_size}")
  t = config.train
  if t.batch_size % (jax.process_count() * t.grad_accum_steps):
    raise TrainingError(f"train.batch_size={t.batch_size} must divide by processes x grad_accum_steps")
  iterator = input_pipeline.make_batch_iterator(
      cache, global_batch_size=t.batch_size, bucket_lengths=tuple(d.bucket_lengths), seed=d.shuffle_seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  num_steps = t.num_steps if t.num_steps > 0 else int(math.ceil(t.num_epochs * iterator.batches_per_epoch))
  if m := config.mask.token_counts:
    token_probs = masking.token_probs_from_counts(np.load(m), cache.special_ids, config.mask.smoothing)
  else:
    token_probs = masking.uniform_token_probs(cache.vocab_size, cache.special_ids)

  # ----------------------------------------------------------------------------- state
  tx, schedule = make_optimizer(config, num_steps)
  student_shardings = sharding.param_shardings(_abstract_boxed_params(student), mesh)
  abstract_opt_state = jax.eval_shape(tx.init, student_params)
  state_shardings = TrainState(
      step=sharding.NamedSharding(mesh, sharding.P()), params=student_shardings,
      opt_state=sharding.opt_state_shardings(tx, abstract_opt_state, student_shardings, mesh),
      rng=sharding.NamedSharding(mesh, sharding.P()))
  create = jax.jit(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                                        rng=jax.random.PRNGKey(t.seed)), out_shardings=state_shardings)
  state = create(student_params)
  del student_params
  teacher_shardings = None
  if teacher is not None:
    teacher_shardings = sharding.param_shardings(_abstract_boxed_params(teacher), mesh)
    teacher_params = jax.device_put(teacher_params, teacher_shardings)

  # ----------------------------------------------------------------------------- checkpoints
  manager = ocp.CheckpointManager(
      (workdir / "checkpoints").absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=t.keep_checkpoints, enable_async_checkpointing=True))
  start_step = 0
  if (latest := manager.latest_step()) is not None:
    abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings)
    restored = manager.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    state = restored["state"]
    iterator.set_state(restored["data"])
    start_step = int(state.step)
    logging.info("resumed from step %d", start_step)

  # ----------------------------------------------------------------------------- step
  hidden_layer_map = _hidden_layer_map(config, student_config, teacher_config)
  step_fn = make_train_step(config, student, teacher, tx, schedule, token_probs, cache.mask_id, hidden_layer_map, mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(step_fn, in_shardings=(state_shardings, teacher_shardings, batch_sharding),
                       out_shardings=(state_shardings, None), donate_argnums=(0,))

  # ----------------------------------------------------------------------------- loop
  writer = MetricsWriter(workdir, start_step, is_main)
  flops_per_token = None
  n_devices = jax.device_count()
  progress = _progress_bar(num_steps, start_step, is_main and t.progress_bar)
  window_start, window_tokens, examples_seen, last = time.perf_counter(), 0, start_step * t.batch_size, {}
  accelerator_seconds = 0.0
  for step in range(start_step + 1, num_steps + 1):
    local = next(iterator)
    batch = sharding.global_batch_from_local(local, mesh)
    state, metrics = train_step(state, teacher_params, batch)
    length = local["input_ids"].shape[1]
    window_tokens += t.batch_size * length
    examples_seen += t.batch_size
    progress.update(1)
    is_last = step == num_steps
    save = step % t.checkpoint_every == 0 or is_last
    if step % t.log_every == 0 or is_last or save:
      values = jax.device_get(metrics)
      if not np.isfinite(values["loss"]):
        manager.wait_until_finished()
        raise TrainingError(f"non-finite loss {values['loss']} at step {step}; the last good checkpoint "
                            f"(step {manager.latest_step()}) in {workdir / 'checkpoints'} is intact")
    if step % t.log_every == 0 or is_last:
      elapsed = time.perf_counter() - window_start
      flops_per_token = flops_per_token or flops.distillation_flops_per_token(
          student_config, teacher_config, length, _needs_logits(config), _needs_logits(config))
      tps = window_tokens / elapsed
      accelerator_seconds += n_devices * elapsed
      last = {k: float(v) for k, v in values.items()}
      last.update(tokens_per_second=tps, tokens_per_second_per_device=tps / n_devices,
                  examples_seen=examples_seen,
                  accelerator_hours=accelerator_seconds / 3600.0)
      mfu = flops.estimate_mfu(flops_per_token, tps / n_devices)
      if mfu is not None:
        last["mfu"] = mfu
      writer.write(step, last)
      progress.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{tps:,.0f}")
      window_start, window_tokens = time.perf_counter(), 0
    if save:  # asynchronous: training goes on while the checkpoint is written
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data=ocp.args.JsonSave(iterator.get_state())), force=True)
  manager.wait_until_finished()
  progress.close()
  writer.close()

  # ----------------------------------------------------------------------------- export
  if config.export:
    from jax.experimental import multihost_utils
    # Every process takes part in gathering sharded parameters; process 0 writes them.
    params = multihost_utils.process_allgather(state.params) if jax.process_count() > 1 else jax.device_get(state.params)
  if config.export and is_main:
    export_dir = workdir / "export"
    convert.save_pretrained(student, params, export_dir, tokenizer_dir=tokenizer_dir, overwrite=True)
    last["export_dir"] = str(export_dir)
    if config.eval_heldout:
      heldout = config.eval_heldout
      if heldout == "embedded":
        heldout = corpus.write_embedded_corpus(workdir / "corpus")["heldout"]
      last["report"] = evaluate.distill_report(str(workdir), str(export_dir), config.teacher.path, heldout)
  last["num_steps"] = num_steps
  last["step_compilations"] = train_step._cache_size()  # one per padded length (bucket)
  last["embedded_corpus"] = embedded
  return last


def _progress_bar(total: int, initial: int, enabled: bool):
  import tqdm
  return tqdm.tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
