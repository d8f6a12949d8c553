"""What a run trains: `TrainState` (step, float32 parameters, AdamW state, RNG key), the
parameters of a model (concrete, abstract, cast) and the optimizer update."""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any  # the trained parameters (float32 master copy)
  opt_state: Any
  rng: jax.Array  # uint32[2]; every step derives its keys with fold_in(rng, step)


def init_state(params, tx: optax.GradientTransformation, seed: int) -> TrainState:
  """The state at step 0: `params`, the optimizer's fresh state of them, PRNGKey(seed)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(seed))


# ===================================================================================== parameters
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


def _dummy_ids(model):
  shape = (1, 2, 8) if type(model).__name__.endswith("ForMultipleChoice") else (1, 8)
  return jnp.ones(shape, jnp.int32)


# ===================================================================================== optimizer
def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int):
  """AdamW with linear warm-up then linear decay to 0 and global-norm clipping (the original
  trainer's train.py: betas (0.9, 0.98), eps 1e-6, warm-up 5%, clipping 5.0). Biases and LayerNorm
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


def is_finite_update(loss: jax.Array, grad_norm: jax.Array) -> jax.Array:
  """Whether a step may update the state: its loss and its gradients' norm are finite (a finite
  loss can still overflow in its gradients)."""
  return jnp.isfinite(loss) & jnp.isfinite(grad_norm)


def apply_gradients(state: TrainState, grads, finite: jax.Array, tx: optax.GradientTransformation) -> TrainState:
  """One optimizer update and step + 1. Without `finite` (is_finite_update) nothing reaches the
  parameters or the optimizer state (both keep their old values); the host stops the run when it
  sees the skipped step."""
  updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  return state.replace(step=state.step + 1, params=keep(new_params, state.params),
                       opt_state=keep(new_opt_state, state.opt_state))
