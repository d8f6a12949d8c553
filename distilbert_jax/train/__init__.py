"""The training core every job shares: `run(job, config, workdir, mesh)`; it imports no job.

A job (`jobs.py` picks it by config.job and `jobs.train_and_evaluate` runs it) supplies a model,
its initial parameters, optional frozen parameters (a teacher), a data iterator and a loss as
sums and denominators. This file owns the rest:

  state      TrainState: step, float32 parameters, AdamW state, RNG key
  step       one `jax.jit` program over a (data, fsdp, tensor) mesh: the job's batch preparation,
             gradients accumulated over micro-batches, the update; donated state. `build_step`
             makes it, for `run` and for the ahead-of-time compiles of aot.py
  metrics    the step returns sums and denominators; they are added up on the device over the
             logging window and divided once, when written (metrics.jsonl and TensorBoard)
  faults     a non-finite loss skips its update and stops the run at the next logging or saving
             step, with the last good checkpoint intact; SIGTERM or SIGINT ends the current step,
             saves a checkpoint and exits, and the same command resumes bit-identically; an
             unreadable latest checkpoint is set aside and the previous one is used
             (checkpoints.py)
  export     the trained (or best evaluated) parameters in Hugging Face format, WORKDIR/export
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from distilbert_jax.train import checkpoints as checkpoints_lib
from distilbert_jax import atomic, convert, errors, models, sharding
from distilbert_jax.hardware import flops


TrainingError = errors.TrainingError


class Preempted(errors.Error):
  """SIGTERM or SIGINT: a checkpoint was written; the same command resumes."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_status = 128 + signum  # the shell's convention for "ended by signal"


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any  # the trained parameters (float32 master copy)
  opt_state: Any
  rng: jax.Array  # uint32[2]; every step derives its keys with fold_in(rng, step)


@dataclasses.dataclass
class Job:
  """What one kind of training supplies; every array function runs inside the jitted step.

  prepare(batch, rng) -> batch: on the whole global batch before it is split into micro-batches
    (the dynamic MLM masking); batch holds [batch, length] arrays.
  denominators(batch) -> {loss name: scalar}: over the whole batch, so that k micro-batches give
    exactly the gradient of one batch k times larger.
  loss_sums(params, frozen_params, micro_batch, dropout_rng) -> {loss name: scalar sum}.
  The loss is sum_k weights[k] * sums[k] / max(denominators[k], 1).
  """
  model: nn.Module
  params: Any  # initial parameters, unboxed
  iterator: Any  # next() -> {name: [rows of this process, length] np.ndarray}; get_state/set_state
  num_steps: int
  loss_weights: dict
  loss_sums: Callable
  denominators: Callable
  prepare: Callable = lambda batch, rng: batch
  frozen_model: Optional[nn.Module] = None  # the teacher, whose parameters are never updated
  frozen_params: Any = None
  flops_per_token: Callable = lambda length: None  # FLOPs of one step per padded token, for MFU
  tokenizer_dir: Optional[str] = None  # copied into the export
  # Optional evaluation: evaluate(params) -> {metric: float}, every eval_every steps and at the
  # end; the parameters with the best `best_metric` (higher is better) are exported.
  evaluate: Optional[Callable] = None
  eval_every: int = 0
  best_metric: Optional[str] = None
  after_export: Optional[Callable] = None  # after_export(export_dir, params) -> {name: value}
  # batch_spec(batch_size, length) -> {name: jax.ShapeDtypeStruct}: the global batch that the
  # iterator yields, for compiling the step without any data (aot.py).
  batch_spec: Optional[Callable] = None


# ===================================================================================== model helpers
def init_params(model: nn.Module, seed: int) -> Any:
  """Unboxed float32 parameters from `model.init` on a dummy [1, 8] batch."""
  return nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(seed), _dummy_ids(model))["params"])


def abstract_boxed_params(model: nn.Module) -> Any:
  """Shapes and logical axis names of `model`'s parameters, without allocating them."""
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), _dummy_ids(model))["params"]


def abstract_params(model: nn.Module, dtype: Any = None) -> Any:
  """jax.ShapeDtypeStructs of `model`'s unboxed parameters (in `dtype` if given): the parameters
  of an ahead-of-time compile, which never allocates or reads them."""
  shapes = nn.meta.unbox(abstract_boxed_params(model))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype or x.dtype), shapes)


def cast_params(x, dtype) -> Any:
  """One parameter in `dtype`: an array, or a jax.ShapeDtypeStruct of an abstract job."""
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(x.shape, dtype)
  return jnp.asarray(x, dtype)


def compile_fields(section: ml_collections.ConfigDict, platform: Optional[str] = None) -> dict:
  """The model config fields that say how a config section's model is compiled (models/layers.py),
  attention_impl "auto" decided for `platform` (default: JAX's default backend)."""
  return dict(scan_layers=section.scan_layers, remat_policy=section.remat_policy,
              attention_impl=models.resolve_attention_impl(section.attention_impl, platform))


def _dummy_ids(model):
  shape = (1, 2, 8) if type(model).__name__.endswith("ForMultipleChoice") else (1, 8)
  return jnp.ones(shape, jnp.int32)


# ===================================================================================== optimizer
def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int):
  """AdamW with linear warm-up then linear decay to 0 and global-norm clipping (the original
  train.py: betas (0.9, 0.98), eps 1e-6, warm-up 5%, clipping 5.0). Biases and LayerNorm
  parameters get no weight decay. Returns (optax transformation, learning-rate schedule)."""
  warmup = int(optim.warmup_fraction * num_steps)
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, optim.learning_rate, max(warmup, 1)),
       optax.linear_schedule(optim.learning_rate, 0.0, max(num_steps - warmup, 1))], [warmup])
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: not any(getattr(k, "key", None) in ("bias", "scale") for k in path), params)
  tx = optax.chain(
      optax.clip_by_global_norm(optim.grad_clip_norm),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
                  mask=decay_mask))
  return tx, schedule


def apply_gradients(state: TrainState, grads, loss: jax.Array, tx: optax.GradientTransformation) -> TrainState:
  """One optimizer update and step + 1. A non-finite loss never reaches the parameters or the
  optimizer state (both keep their old values); the host stops the run when it sees it."""
  updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  return state.replace(step=state.step + 1, params=keep(new_params, state.params),
                       opt_state=keep(new_opt_state, state.opt_state))


# ===================================================================================== step
def make_train_step(job: Job, tx, schedule, mesh, grad_accum_steps: int):
  """step(state, frozen_params, batch) -> (state, metrics).

  batch: {name: [batch, length]} (input_ids and attention_mask at least). metrics:
  {"mean": {name: (sum, count)}, "total": {name: value}}, to be added up over steps.
  """
  accum = grad_accum_steps
  micro_sharding = sharding.NamedSharding(mesh, sharding.P(None, sharding.BATCH_AXES))

  def step(state: TrainState, frozen_params, batch):
    # The models' activation constraints (models/layers.py) bind to this mesh while tracing.
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
      return _step(state, frozen_params, batch)

  def _step(state: TrainState, frozen_params, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    prepare_rng, dropout_rng = jax.random.split(rng)
    batch = job.prepare(batch, prepare_rng)
    denominators = job.denominators(batch)

    def loss_fn(params, micro, micro_rng):
      sums = job.loss_sums(params, frozen_params, micro, micro_rng)
      total = sum(job.loss_weights[k] * v / jnp.maximum(denominators[k], 1.0) for k, v in sums.items())
      return total, sums

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum == 1:
      (loss, sums), grads = grad_fn(state.params, batch, dropout_rng)
    else:
      # Micro-batch j takes rows j, j + k, ...: each device keeps an equal share of every one.
      def split(x):
        x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, micro_sharding)
      micros = jax.tree.map(split, batch)

      def body(carry, xs):
        micro, j = xs
        (loss_j, sums_j), grads_j = grad_fn(state.params, micro, jax.random.fold_in(dropout_rng, j))
        return jax.tree.map(jnp.add, carry, (loss_j, sums_j, grads_j)), None

      shapes = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micros), dropout_rng)
      zeros = jax.tree.map(lambda z: jnp.zeros(z.shape, z.dtype), (shapes[0][0], shapes[0][1], shapes[1]))
      (loss, sums, grads), _ = jax.lax.scan(body, zeros, (micros, jnp.arange(accum)))

    new_state = apply_gradients(state, grads, loss, tx)
    finite = jnp.isfinite(loss)
    one = jnp.ones((), jnp.float32)
    mean = {f"loss_{k}": (jnp.where(finite, v, 0.0), jnp.where(finite, denominators[k], 0.0))
            for k, v in sums.items()}
    mean.update(loss=(jnp.where(finite, loss, 0.0), finite.astype(jnp.float32)),
                grad_norm=(jnp.where(finite, optax.tree.norm(grads), 0.0), finite.astype(jnp.float32)),
                learning_rate=(schedule(state.step), one))
    attention_mask = batch["attention_mask"]
    total = {"real_tokens": jnp.sum(attention_mask, dtype=jnp.float32),
             "padded_tokens": jnp.asarray(attention_mask.size, jnp.float32),
             "skipped_steps": 1.0 - finite.astype(jnp.float32)}
    return new_state, {"mean": mean, "total": total}

  return step


@jax.jit
def _add_metrics(window, metrics):
  return jax.tree.map(jnp.add, window, metrics)


def window_to_json(window, seconds: float) -> Optional[dict]:
  """The open logging window as JSON for the checkpoint: float32 sums written exactly (a float32
  is a double exactly), so that a resumed run logs what an uninterrupted one would."""
  if window is None:
    return None
  host = jax.device_get(window)
  return {"mean": {k: [float(s), float(c)] for k, (s, c) in host["mean"].items()},
          "total": {k: float(v) for k, v in host["total"].items()}, "seconds": seconds}


def window_from_json(stored: Optional[dict]) -> tuple:
  """(the window as the step returns it, its seconds so far), or (None, 0.0)."""
  if not stored:
    return None, 0.0
  f32 = lambda x: jnp.asarray(np.float32(x))
  window = {"mean": {k: (f32(s), f32(c)) for k, (s, c) in stored["mean"].items()},
            "total": {k: f32(v) for k, v in stored["total"].items()}}
  return window, float(stored["seconds"])


def normalise_metrics(window) -> dict:
  """{"mean": {k: (sum, count)}, "total": {k: v}} on the host -> {k: float}."""
  out = {k: float(s) / float(c) for k, (s, c) in window["mean"].items() if float(c) > 0}
  out.update({k: float(v) for k, v in window["total"].items()})
  return out


# ===================================================================================== signals
class _StopSignals:
  """Turns SIGTERM and SIGINT into a flag that the loop reads after each step (the step in
  flight finishes; the checkpoint is written; the process exits). Cloud TPU VMs and Slurm
  preempt with SIGTERM and a grace period of seconds."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread: signals are the caller's business
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # a second signal: stop now
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)

  def agreed(self) -> Optional[int]:
    """The signal number if any process received one; every process gets the same answer."""
    if jax.process_count() == 1:
      return self.signum
    from jax.experimental import multihost_utils
    everyone = multihost_utils.process_allgather(np.asarray(self.signum or 0, np.int32))
    return int(np.max(everyone)) or None


# ===================================================================================== metrics
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
      if isinstance(v, (int, float)):
        self.tb.add_scalar(k, v, step)
    self.tb.flush()

  def close(self):
    if self.enabled:
      self.tb.close()


def _progress_bar(total: int, initial: int, enabled: bool):
  import tqdm
  return tqdm.tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


# ===================================================================================== loop
def initialize_distributed(config) -> None:
  if config.train.multihost and not jax.distributed.is_initialized():
    # TPU pods and Slurm are detected by JAX; elsewhere (e.g. several processes on one machine)
    # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID say who is who.
    env = os.environ
    kwargs = ({"num_processes": int(env["JAX_NUM_PROCESSES"]), "process_id": int(env["JAX_PROCESS_ID"])}
              if "JAX_NUM_PROCESSES" in env else {})
    jax.distributed.initialize(**kwargs)


def step_compiler_options(job: Job, platform: Optional[str] = None) -> dict:
  """The train step's XLA options on `platform` (default: JAX's default backend): those of a
  program that differentiates the trained model in its compute dtype (models.compiler_options);
  a frozen bfloat16 teacher needs nothing more."""
  return models.compiler_options("masked_lm", backend=platform, dtype=job.model.dtype, training=True)


def make_mesh(config, devices=None) -> sharding.Mesh:
  """The (data, fsdp, tensor) mesh of `config.mesh` over `devices` (default: all of JAX's),
  checked against the batch size."""
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
  t, rows = config.train, mesh.shape["data"] * mesh.shape["fsdp"]
  if t.batch_size % rows:
    raise errors.ConfigError(f"train.batch_size={t.batch_size} does not split over the mesh's data x fsdp = {rows} "
                             f"devices")
  logging.info("mesh: %s", dict(mesh.shape))
  return mesh


def mesh_platform(mesh: sharding.Mesh) -> str:
  """The platform of the mesh's devices ("cpu", "tpu", "gpu"): the target a step is compiled for,
  which for an ahead-of-time compile is not the machine that compiles."""
  platform = mesh.devices.flat[0].platform
  return "gpu" if platform in ("cuda", "rocm") else platform


@dataclasses.dataclass
class StepProgram:
  """The jitted train step of a job on a mesh, and the shardings of what it takes.

  train_step(state, frozen_params, batch) -> (state, metrics); the state is donated.
  create_state(params) -> TrainState, placed with state_shardings (params: the job's initial
  parameters, or their jax.ShapeDtypeStructs under jax.eval_shape)."""
  train_step: Any
  create_state: Any
  state_shardings: TrainState
  frozen_shardings: Any  # None without a frozen model
  batch_sharding: sharding.NamedSharding
  tx: Any
  schedule: Any


def build_step(job: Job, config: ml_collections.ConfigDict, mesh: sharding.Mesh) -> StepProgram:
  """The one place where the train step, its state and their shardings are built: `run` trains
  with it, `aot.py` compiles it for a TPU or GPU target from any machine."""
  t = config.train
  tx, schedule = make_optimizer(config.optim, job.num_steps)
  param_shardings = sharding.param_shardings(abstract_boxed_params(job.model), mesh)
  abstract_opt_state = jax.eval_shape(tx.init, job.params)
  replicated = sharding.NamedSharding(mesh, sharding.P())
  state_shardings = TrainState(
      step=replicated, params=param_shardings,
      opt_state=sharding.opt_state_shardings(tx, abstract_opt_state, param_shardings, mesh), rng=replicated)
  create = jax.jit(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                                        rng=jax.random.PRNGKey(t.seed)), out_shardings=state_shardings)
  frozen_shardings = None
  if job.frozen_model is not None:
    frozen_shardings = sharding.param_shardings(abstract_boxed_params(job.frozen_model), mesh)
  step_fn = make_train_step(job, tx, schedule, mesh, t.grad_accum_steps)
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(step_fn, in_shardings=(state_shardings, frozen_shardings, batch_sharding),
                       out_shardings=(state_shardings, None), donate_argnums=(0,),
                       compiler_options=step_compiler_options(job, mesh_platform(mesh)))
  return StepProgram(train_step, create, state_shardings, frozen_shardings, batch_sharding, tx, schedule)


def run(job: Job, config: ml_collections.ConfigDict, workdir: Path, mesh: sharding.Mesh) -> dict:
  """Trains `job` on `mesh` as `config.train` and `config.optim` say; returns the last logged
  metrics (and "export_dir" when exported)."""
  t = config.train
  is_main = jax.process_index() == 0

  # ----------------------------------------------------------------------------- state and step
  program = build_step(job, config, mesh)
  state_shardings, train_step = program.state_shardings, program.train_step
  state = program.create_state(job.params)
  job.params = None  # the state holds them now (sharded); free the host copy
  frozen_params = None
  if job.frozen_model is not None:
    frozen_params = jax.device_put(job.frozen_params, program.frozen_shardings)
    job.frozen_params = None

  # ----------------------------------------------------------------------------- checkpoints
  checkpoints = checkpoints_lib.Checkpoints(workdir, t.keep_checkpoints)
  abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                state, state_shardings)
  restored = checkpoints.restore(abstract_state)
  start_step, window, window_seconds = 0, None, 0.0
  if restored is not None:
    state, data_state = restored
    if "iterator" not in data_state:  # a checkpoint written before the window was kept in it
      data_state = {"iterator": data_state}
    job.iterator.set_state(data_state["iterator"])
    # The logging window that was open when the checkpoint was written goes on where it stopped.
    window, window_seconds = window_from_json(data_state.get("metrics_window"))
    start_step = int(state.step)
    logging.info("resumed from step %d", start_step)
  best = _Best(workdir, job.best_metric, is_main) if job.evaluate else None

  # ----------------------------------------------------------------------------- loop
  writer = MetricsWriter(workdir, start_step, is_main)
  progress = _progress_bar(job.num_steps, start_step, is_main and t.progress_bar)
  n_devices = jax.device_count()
  examples_seen = start_step * t.batch_size
  accelerator_seconds, last = 0.0, {}
  window_start = time.perf_counter() - window_seconds
  lengths_seen = set()
  with _StopSignals() as stop:
    for step in range(start_step + 1, job.num_steps + 1):
      local = next(job.iterator)
      batch = sharding.global_batch_from_local(local, mesh)
      state, metrics = train_step(state, frozen_params, batch)
      window = metrics if window is None else _add_metrics(window, metrics)
      length = local["input_ids"].shape[-1]
      lengths_seen.add(length)
      examples_seen += t.batch_size
      progress.update(1)
      is_last = step == job.num_steps
      signum = stop.agreed()
      save = step % t.checkpoint_every == 0 or is_last or signum is not None
      # A stop between logging steps logs nothing: the checkpoint carries the open window.
      log = step % t.log_every == 0 or is_last
      if log or save:
        values = normalise_metrics(jax.device_get(window))
        if values["skipped_steps"] > 0:  # logged (the finite steps' means and the count), then stop
          writer.write(step, {k: v for k, v in values.items() if k not in ("real_tokens", "padded_tokens")})
          writer.close()
          checkpoints.wait()
          raise TrainingError(
              f"non-finite loss in {values['skipped_steps']:.0f} step(s) up to step {step}: their updates were "
              f"skipped and the run stops; the last good checkpoint (step {checkpoints.latest_step()}) in "
              f"{checkpoints.directory} is intact")
      if log:
        elapsed = time.perf_counter() - window_start
        accelerator_seconds += n_devices * elapsed
        last = {k: v for k, v in values.items() if k not in ("real_tokens", "padded_tokens", "skipped_steps")}
        tokens = values["padded_tokens"] / elapsed
        last.update(tokens_per_second=values["real_tokens"] / elapsed, padded_tokens_per_second=tokens,
                    tokens_per_second_per_device=values["real_tokens"] / elapsed / n_devices,
                    examples_seen=examples_seen, accelerator_hours=accelerator_seconds / 3600.0)
        flops_per_token = job.flops_per_token(length)
        mfu = flops.estimate_mfu(flops_per_token, tokens / n_devices) if flops_per_token else None
        if mfu is not None:
          last["mfu"] = mfu
        if job.evaluate and ((job.eval_every and step % job.eval_every == 0) or is_last):
          last.update({f"eval_{k}": v for k, v in job.evaluate(state.params).items()})
          best.update(step, last, state.params, job)
        writer.write(step, last)
        progress.set_postfix(loss=f"{last.get('loss', float('nan')):.4f}",
                             tok_s=f"{last['tokens_per_second']:,.0f}")
        window, window_start = None, time.perf_counter()
      if save:  # asynchronous: training goes on while the checkpoint is written
        checkpoints.save(step, state, {"iterator": job.iterator.get_state(), "metrics_window": window_to_json(
            window, time.perf_counter() - window_start)})
      if signum is not None and not is_last:
        checkpoints.close()
        progress.close()
        writer.close()
        name = signal.Signals(signum).name
        raise Preempted(f"{name} at step {step}: checkpoint saved in {checkpoints.directory}; run the same "
                        f"command again to resume", signum)
  checkpoints.close()
  progress.close()
  writer.close()

  # ----------------------------------------------------------------------------- export
  last["num_steps"] = job.num_steps
  last["padded_lengths_seen"] = sorted(lengths_seen)
  if config.export:
    params = best.params() if best is not None and best.exists() else state.params
    if jax.process_count() > 1:  # every process takes part in gathering sharded parameters
      from jax.experimental import multihost_utils
      params = multihost_utils.process_allgather(params)
    else:
      params = jax.device_get(params)
    if is_main:
      export_dir = workdir / "export"
      convert.save_pretrained(job.model, params, export_dir, tokenizer_dir=job.tokenizer_dir, overwrite=True)
      last["export_dir"] = str(export_dir)
      if job.after_export:
        last.update(job.after_export(export_dir, params))
  return last


class _Best:
  """The parameters with the best evaluation so far, in WORKDIR/best (our Flax format) with
  best.json saying at which step and with what metrics; kept across resumes."""

  def __init__(self, workdir: Path, metric: Optional[str], enabled: bool):
    self.dir, self.metric, self.enabled = workdir / "best", metric, enabled
    self.record_path = workdir / "best.json"
    self.record = json.loads(self.record_path.read_text()) if self.record_path.exists() else None

  def exists(self) -> bool:
    return self.metric is not None and (self.dir / "config.json").exists()

  def update(self, step: int, metrics: dict, params, job: Job) -> None:
    if not self.metric:
      return
    value = metrics[f"eval_{self.metric}"]
    if self.record is not None and not value > self.record["value"]:
      return
    if self.record is not None and step < self.record["step"]:
      return  # an interrupted run already saw later steps; its record stands
    host_params = jax.device_get(params) if jax.process_count() == 1 else _allgather(params)
    self.record = {"step": step, "metric": self.metric, "value": value,
                   "metrics": {k: v for k, v in metrics.items() if k.startswith("eval_")}}
    if self.enabled:
      convert.save_flax(job.model, host_params, self.dir, tokenizer_dir=job.tokenizer_dir, overwrite=True)
      atomic.write_text(self.record_path, json.dumps(self.record, indent=2))

  def params(self):
    head = json.loads((self.dir / "config.json").read_text())[convert.FLAX_HEAD_KEY]
    return convert.load_pretrained(str(self.dir), head=head)[1]


def _allgather(params):
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(params)
