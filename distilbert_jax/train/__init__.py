"""The training core every job shares: `run(job, config, workdir, mesh)`; it imports no job.

A job (jobs/ picks it by config.job and `jobs.train_and_evaluate` runs it) hands over a `Job`
(job.py): a model, its initial parameters, optional frozen parameters (a teacher), a data
iterator, a loss as sums and denominators, and the function that exports the trained model.
One run goes through these modules:

  mesh.py         the processes (jax.distributed) and the (data, fsdp, tensor) mesh
  step.py         `build_step`: one `jax.jit` program over the mesh: the job's batch preparation,
                  gradients accumulated over micro-batches, the update; donated state. The same
                  program is what hardware/aot.py compiles ahead of time
  state.py        TrainState (step, float32 parameters, AdamW state, RNG key), the optimizer,
                  and a model's parameters concrete or abstract
  checkpoints.py  the state and data position, saved asynchronously; an unreadable latest
                  checkpoint is set aside and the previous one is used
  loop.py         `run`: restore, the steps, evaluation, checkpoints, then `job.export`
  metrics.py      the step returns sums and denominators; they are added up on the device over
                  the logging window and divided once, when written (metrics.jsonl, TensorBoard)
  signals.py      SIGTERM or SIGINT ends the current step, saves a checkpoint and exits; the same
                  command resumes bit-identically. A non-finite loss (or gradient) skips its update and stops
                  the run at the next logging or saving step, the last good checkpoint intact
  best.py         with evaluation, the best evaluated parameters, which the export then takes
"""
from distilbert_jax import errors
from distilbert_jax.train.best import BestParams
from distilbert_jax.train.job import Job
from distilbert_jax.train.loop import run
from distilbert_jax.train.mesh import initialize_distributed, make_mesh, mesh_platform
from distilbert_jax.train.metrics import MetricsWriter, normalise_metrics, window_from_json, window_to_json
from distilbert_jax.train.signals import Preempted
from distilbert_jax.train.state import (TrainState, abstract_boxed_params, abstract_params, apply_gradients,
                                        cast_params, init_params, init_state, is_finite_update, make_optimizer)
from distilbert_jax.train.step import (StepProgram, build_step, compile_fields, make_train_step,
                                       step_compiler_options)

TrainingError = errors.TrainingError

__all__ = ["BestParams", "Job", "MetricsWriter", "Preempted", "StepProgram", "TrainState", "TrainingError",
           "abstract_boxed_params", "abstract_params", "apply_gradients", "build_step", "cast_params",
           "compile_fields", "init_params", "init_state", "initialize_distributed", "is_finite_update", "make_mesh", "make_optimizer",
           "make_train_step", "mesh_platform", "normalise_metrics", "run", "step_compiler_options",
           "window_from_json", "window_to_json"]
