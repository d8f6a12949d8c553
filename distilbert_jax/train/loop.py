"""`run(job, config, workdir, mesh)`: restore, train, evaluate, checkpoint, stop on a signal or
a non-finite loss, and export through the job's own `export`."""
from __future__ import annotations

import time
from pathlib import Path

import jax
import ml_collections
from absl import logging

from distilbert_jax import errors, sharding
from distilbert_jax.hardware import flops
from distilbert_jax.train import checkpoints as checkpoints_lib
from distilbert_jax.train.best import BestParams, gather_to_host
from distilbert_jax.train.job import Job
from distilbert_jax.train.metrics import (MetricsWriter, add_metrics, normalise_metrics, progress_bar,
                                          window_from_json, window_to_json)
from distilbert_jax.train.signals import StopSignals, preempted
from distilbert_jax.train.step import build_step

# Counted in the window for tokens per second; not logged as they are.
_TOKEN_COUNTS = ("real_tokens", "padded_tokens")


def run(job: Job, config: ml_collections.ConfigDict, workdir: Path, mesh: sharding.Mesh) -> dict:
  """Trains `job` on `mesh` as `config.train` and `config.optim` say; returns the last logged
  metrics (and "export_dir" when exported)."""
  t = config.train
  is_main = jax.process_index() == 0

  # ----------------------------------------------------------------------------- state and step
  program = build_step(job, config, mesh)
  state_shardings, train_step = program.state_shardings, program.train_step
  state = program.create_state(job.initial_params())
  job.params = None  # the state holds them now (sharded); free the host copy (extra_params, small, stay)
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
  best = BestParams(workdir, job.best_metric, is_main) if job.evaluate else None

  # ----------------------------------------------------------------------------- loop
  writer = MetricsWriter(workdir, start_step, is_main)
  progress = progress_bar(job.num_steps, start_step, is_main and t.progress_bar)
  n_devices = jax.device_count()
  examples_seen = start_step * t.batch_size
  accelerator_seconds, last = 0.0, {}
  window_start = time.perf_counter() - window_seconds
  lengths_seen = set()
  with StopSignals() as stop:
    for step in range(start_step + 1, job.num_steps + 1):
      local = next(job.iterator)
      batch = sharding.global_batch_from_local(local, mesh)
      state, metrics = train_step(state, frozen_params, batch)
      window = metrics if window is None else add_metrics(window, metrics)
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
          writer.write(step, {k: v for k, v in values.items() if k not in _TOKEN_COUNTS})
          writer.close()
          checkpoints.wait()
          raise errors.TrainingError(
              f"non-finite loss or gradients in {values['skipped_steps']:.0f} step(s) up to step {step}: their updates were "
              f"skipped and the run stops; the last good checkpoint (step {checkpoints.latest_step()}) in "
              f"{checkpoints.directory} is intact")
      if log:
        elapsed = time.perf_counter() - window_start
        accelerator_seconds += n_devices * elapsed
        last = {k: v for k, v in values.items() if k not in _TOKEN_COUNTS + ("skipped_steps",)}
        tokens = values["padded_tokens"] / elapsed
        last.update(tokens_per_second=values["real_tokens"] / elapsed, padded_tokens_per_second=tokens,
                    tokens_per_second_per_device=values["real_tokens"] / elapsed / n_devices,
                    examples_seen=examples_seen, accelerator_hours=accelerator_seconds / 3600.0)
        flops_per_token = job.flops_per_token(length)
        mfu = flops.estimate_mfu(flops_per_token, tokens / n_devices) if flops_per_token else None
        if mfu is not None:
          last["mfu"] = mfu
        if job.evaluate and ((job.eval_every and step % job.eval_every == 0) or is_last):
          model_params = job.model_params(state.params)
          last.update({f"eval_{k}": v for k, v in job.evaluate(model_params).items()})
          best.update(step, last, model_params, job)
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
        raise preempted(signum, step, checkpoints.directory)
  checkpoints.close()
  progress.close()
  writer.close()

  # ----------------------------------------------------------------------------- export
  last["num_steps"] = job.num_steps
  last["padded_lengths_seen"] = sorted(lengths_seen)
  if config.export and job.export is not None:
    params = gather_to_host(best.params() if best is not None and best.exists() else job.model_params(state.params))
    if is_main:
      export_dir = workdir / "export"
      job.export(params, export_dir)
      last["export_dir"] = str(export_dir)
      if job.after_export:
        last.update(job.after_export(export_dir, params))
  return last
