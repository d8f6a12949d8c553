"""The training jobs by the name in `config.job`, and the one call that runs one.

  distill   distill.py: distillation (Sanh et al., 2019) and teacher-free MLM pretraining
  finetune  finetune.py: fine-tuning and task distillation on GLUE, SQuAD and your own tables

Each job module has check_config(config, data=True), make_job(config, workdir) and
make_abstract_job(config, platform); checks.py holds the config checks both share. The core
(train/) knows none of them: it runs a train.Job, which carries the job's own export of the
trained model, and hardware/aot.py compiles the step of one.
"""
from __future__ import annotations

import importlib

import jax
import ml_collections

from distilbert_jax import atomic, configuration, errors, storage, train

JOBS = ("distill", "finetune")


def job_module(config: ml_collections.ConfigDict):
  """The module of the job `config.job` names ("distill" by default)."""
  name = config.get("job", "distill")
  if name not in JOBS:
    raise errors.ConfigError(f"config.job={name!r} is not one of {', '.join(JOBS)}")
  return importlib.import_module(f"distilbert_jax.jobs.{name}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) the job `config.job` in `workdir`.

  Returns the last logged metrics plus "export_dir" (Hugging Face format) when exported.
  """
  module = job_module(config)
  config = configuration.resolve_paths(config)
  module.check_config(config)
  workdir = storage.path(workdir)
  train.initialize_distributed(config)
  mesh = train.make_mesh(config)
  job = module.make_job(config, workdir)
  # Only now, with the data read and checked: bad input leaves nothing behind.
  if not storage.is_remote(workdir):  # object storage has no directories to make
    workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    atomic.write_text(workdir / "config.json", config.to_json_best_effort(indent=2))
  return train.run(job, config, workdir, mesh)
