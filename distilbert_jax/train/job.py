"""`Job`: what one kind of training hands to the core, which knows no job by name."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn


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
  # export(host params, out_dir) -> None: writes the trained model in Hugging Face format, the
  # job's own business (its head, its tokenizer). None: nothing is exported (an abstract job).
  export: Optional[Callable] = None
  tokenizer_dir: Optional[str] = None  # copied beside the best evaluated parameters (best.py)
  # Optional evaluation: evaluate(params) -> {metric: float}, every eval_every steps and at the
  # end; the parameters with the best `best_metric` (higher is better) are exported.
  evaluate: Optional[Callable] = None
  eval_every: int = 0
  best_metric: Optional[str] = None
  after_export: Optional[Callable] = None  # after_export(export_dir, params) -> {name: value}
  # batch_spec(batch_size, length) -> {name: jax.ShapeDtypeStruct}: the global batch that the
  # iterator yields, for compiling the step without any data (hardware/aot.py).
  batch_spec: Optional[Callable] = None
  # Parameters a loss trains beside the model's (TinyBERT's W_h), {name: float32 array}, whole on
  # every device. With them the trained tree is {"model": the model's parameters, **extra}:
  # loss_sums and the checkpoints see it whole; evaluate, the best parameters and export see
  # model_params(it).
  extra_params: Optional[dict] = None

  def initial_params(self) -> Any:
    """The trained tree at step 0."""
    return self.params if self.extra_params is None else {"model": self.params, **self.extra_params}

  def model_params(self, trained) -> Any:
    """The model's parameters within the trained tree."""
    return trained if self.extra_params is None else trained["model"]
