"""Predictions and metrics of a model on a task's evaluation sets, and the files that hold them.

  Evaluator(model, data, config).evaluate(params) -> ({metric: value}, {split: predictions})
  Evaluator.write(out_dir, ...)      eval_results.json and the predictions of each split

The evaluator runs a jitted predict function (see `make_predict`) over every example of each
set, in length-sorted batches sharded over the mesh's data axes, and scores the outputs with
the task's official metrics (glue.compute_metrics, squad.evaluate).
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax import atomic, models, sharding
from distilbert_jax.records import strict_json
from distilbert_jax.tasks import glue, squad
from distilbert_jax.tasks.batches import eval_batches, model_kwargs
from distilbert_jax.tasks.task_data import EvalSet, TaskData, head_for, is_squad


def make_predict(model, head: str):
  """jitted predict(params, batch) -> float32 outputs: (logits [batch, classes],) or, for
  question answering, (start_logits, end_logits), each [batch, length]."""
  out_names = ("start_logits", "end_logits") if head == "question_answering" else ("logits",)

  def predict(params, batch):
    out = model.apply({"params": params}, batch["input_ids"], deterministic=True, **model_kwargs(model, batch))
    return tuple(getattr(out, n).astype(jnp.float32) for n in out_names)
  return jax.jit(predict, compiler_options=models.compiler_options(head, dtype=model.dtype))


class Evaluator:
  """Predictions and metrics of a model on the task's evaluation sets."""

  def __init__(self, model, data: TaskData, config, mesh=None):
    self.model, self.data, self.config = model, data, config
    self.mesh = mesh or sharding.make_mesh(-1, 1, 1)
    rows = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    self.batch_size = int(math.ceil(config.eval.batch_size / rows) * rows)
    self._predict = make_predict(model, head_for(task_name(data)))

  def outputs(self, params, eval_set: EvalSet) -> tuple:
    """Model outputs for every row of eval_set, in its order: ([n, C],) or ([n, L], [n, L])."""
    arrays = eval_set.arrays
    n, max_length = arrays["input_ids"].shape
    results = None
    for rows, batch in eval_batches(arrays, self.batch_size, tuple(self.config.data.bucket_lengths)):
      local = _process_rows(batch)
      outs = self._predict(params, sharding.global_batch_from_local(local, self.mesh))
      outs = tuple(_to_host(o) for o in outs)
      if results is None:
        results = tuple(np.full((n,) + ((max_length,) if o.ndim == 2 and self._is_span() else o.shape[1:]),
                                -1e9 if self._is_span() else 0.0, np.float32) for o in outs)
      real = rows >= 0
      for result, o in zip(results, outs):
        if self._is_span():
          result[rows[real], :o.shape[1]] = o[real]
        else:
          result[rows[real]] = o[real]
    return results

  def _is_span(self) -> bool:
    return is_squad(task_name(self.data))

  def evaluate(self, params) -> tuple[dict, dict]:
    """({metric: value}, {split: predictions}); metric names are prefixed by the split when
    there are several evaluation sets (MNLI's dev_matched and dev_mismatched)."""
    metrics, predictions = {}, {}
    for eval_set in self.data.evals:
      prefix = f"{eval_set.name}_" if len(self.data.evals) > 1 else ""
      outs = self.outputs(params, eval_set)
      if self._is_span():
        s = self.config.squad
        # The task squad_v2, the flag, or data with unanswerable questions: each means v2.0.
        version_2 = (s.version_2 or task_name(self.data).lower().endswith(("v2", "v2.0"))
                     or squad.has_unanswerable(eval_set.examples))
        answers = squad.postprocess(eval_set.examples, eval_set.features, outs[0], outs[1],
                                    n_best_size=s.n_best_size, max_answer_length=s.max_answer_length,
                                    version_2=version_2, null_score_diff_threshold=s.null_score_diff_threshold)
        scores = squad.evaluate(eval_set.examples, answers, version_2=version_2)
        predictions[eval_set.name] = answers
      else:
        logits = outs[0]
        scores = glue.compute_metrics(self.data.task, logits, eval_set.arrays["labels"]) \
            if "labels" in eval_set.arrays else {}
        predictions[eval_set.name] = logits
      metrics.update({f"{prefix}{k}": float(v) for k, v in scores.items()})
      metrics[f"{prefix}num_examples"] = len(eval_set.examples)
    return metrics, predictions

  def main_metric(self) -> str:
    name = "f1" if self._is_span() else self.data.task.main_metric
    return f"{self.data.evals[0].name}_{name}" if len(self.data.evals) > 1 else name

  def write(self, out_dir: Path, metrics: dict, predictions: dict) -> None:
    """eval_results.json and the predictions: SQuAD predictions.json ({id: answer}), GLUE the
    benchmark's submission format, one file per split under predictions/SPLIT/."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "eval_results.json", strict_json(metrics))
    for eval_set in self.data.evals:
      if self._is_span():
        name = "predictions.json" if len(self.data.evals) == 1 else f"predictions_{eval_set.name}.json"
        squad.write_predictions(out_dir / name, predictions[eval_set.name])
      else:
        glue.write_submission(out_dir / "predictions" / eval_set.name, self.data.task, eval_set.name,
                              eval_set.examples.ids, predictions[eval_set.name])

  def write_test_predictions(self, params, out_dir: Path) -> list:
    """The GLUE server's submission files (CoLA.tsv, MNLI-m.tsv, ...) for the unlabelled test
    sets, in out_dir/predictions/test/. Returns their paths."""
    return [glue.write_submission(out_dir / "predictions" / "test", self.data.task, test_set.name,
                                  test_set.examples.ids, self.outputs(params, test_set)[0])
            for test_set in self.data.tests]


def task_name(data: TaskData) -> str:
  return data.task if isinstance(data.task, str) else data.task.name


def _process_rows(batch: dict) -> dict:
  """This process's rows of a global batch."""
  count, index = jax.process_count(), jax.process_index()
  rows = next(iter(batch.values())).shape[0] // count
  return {k: v[index * rows:(index + 1) * rows] for k, v in batch.items()}


def _to_host(x) -> np.ndarray:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))
