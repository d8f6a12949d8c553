"""The train step: one `jax.jit` program over a (data, fsdp, tensor) mesh that runs the job's
batch preparation, accumulates gradients over micro-batches and applies the update, with the
state donated. `build_step` makes it for `loop.run` and for the ahead-of-time compiles of
hardware/aot.py."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from distilbert_jax import models, sharding
from distilbert_jax.train.job import Job
from distilbert_jax.train.mesh import mesh_platform
from distilbert_jax.train.state import (TrainState, abstract_boxed_params, apply_gradients, init_state,
                                        is_finite_update, make_optimizer)


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

    grad_norm = optax.tree.norm(grads)
    finite = is_finite_update(loss, grad_norm)
    new_state = apply_gradients(state, grads, finite, tx)
    one = jnp.ones((), jnp.float32)
    mean = {f"loss_{k}": (jnp.where(finite, v, 0.0), jnp.where(finite, denominators[k], 0.0))
            for k, v in sums.items()}
    mean.update(loss=(jnp.where(finite, loss, 0.0), finite.astype(jnp.float32)),
                grad_norm=(jnp.where(finite, grad_norm, 0.0), finite.astype(jnp.float32)),
                learning_rate=(schedule(state.step), one))
    attention_mask = batch["attention_mask"]
    total = {"real_tokens": jnp.sum(attention_mask, dtype=jnp.float32),
             "padded_tokens": jnp.asarray(attention_mask.size, jnp.float32),
             "skipped_steps": 1.0 - finite.astype(jnp.float32)}
    return new_state, {"mean": mean, "total": total}

  return step


# ===================================================================================== compiling
def compile_fields(section: ml_collections.ConfigDict, platform: Optional[str] = None) -> dict:
  """The model config fields that say how a config section's model is compiled (models/layers.py),
  attention_impl "auto" decided for `platform` (default: JAX's default backend)."""
  return dict(scan_layers=section.scan_layers, remat_policy=section.remat_policy,
              attention_impl=models.resolve_attention_impl(section.attention_impl, platform))


def step_compiler_options(job: Job, platform: Optional[str] = None) -> dict:
  """The train step's XLA options on `platform` (default: JAX's default backend): those of a
  program that differentiates the trained model in its compute dtype (models.compiler_options);
  a frozen bfloat16 teacher needs nothing more."""
  return models.compiler_options("masked_lm", backend=platform, dtype=job.model.dtype, training=True)


@dataclasses.dataclass
class StepProgram:
  """The jitted train step of a job on a mesh, and the shardings of what it takes.

  train_step(state, frozen_params, batch) -> (state, metrics); the state is donated.
  create_state(params) -> TrainState, placed with state_shardings (params: the job's
  initial_params(), or their jax.ShapeDtypeStructs under jax.eval_shape)."""
  train_step: Any
  create_state: Any
  state_shardings: TrainState
  frozen_shardings: Any  # None without a frozen model
  batch_sharding: sharding.NamedSharding
  tx: Any
  schedule: Any


def build_step(job: Job, config: ml_collections.ConfigDict, mesh: sharding.Mesh) -> StepProgram:
  """The one place where the train step, its state and their shardings are built: `run` trains
  with it, hardware/aot.py compiles it for a TPU or GPU target from any machine."""
  t = config.train
  tx, schedule = make_optimizer(config.optim, job.num_steps)
  param_shardings = sharding.param_shardings(abstract_boxed_params(job.model), mesh)
  replicated = sharding.NamedSharding(mesh, sharding.P())
  if job.extra_params is not None:  # a loss's own small parameters: whole on every device
    param_shardings = {"model": param_shardings, **jax.tree.map(lambda _: replicated, job.extra_params)}
  abstract_opt_state = jax.eval_shape(tx.init, job.initial_params())
  state_shardings = TrainState(
      step=replicated, params=param_shardings,
      opt_state=sharding.opt_state_shardings(tx, abstract_opt_state, param_shardings, mesh), rng=replicated)
  create = jax.jit(lambda p: init_state(p, tx, t.seed), out_shardings=state_shardings)
  frozen_shardings = None
  if job.frozen_model is not None:
    frozen_shardings = sharding.param_shardings(abstract_boxed_params(job.frozen_model), mesh)
  step_fn = make_train_step(job, tx, schedule, mesh, t.grad_accum_steps)
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(step_fn, in_shardings=(state_shardings, frozen_shardings, batch_sharding),
                       out_shardings=(state_shardings, None), donate_argnums=(0,),
                       compiler_options=step_compiler_options(job, mesh_platform(mesh)))
  return StepProgram(train_step, create, state_shardings, frozen_shardings, batch_sharding, tx, schedule)
