"""`distilbert-jax evaluate`: a fine-tuned model directory scored on a task's data.

  distilbert-jax evaluate --model runs/rte/export --task glue/rte --data GLUE_DIR

The run is a fine-tuning config's evaluation alone: `evaluation_config` builds that config with
the defaults of tasks/defaults.py (those of configs/glue.py and configs/squad.py), and the
fine-tuning job's Evaluator scores and writes it.
"""
from __future__ import annotations

import os
from typing import Optional

import ml_collections

from distilbert_jax import convert, errors, storage
from distilbert_jax.tasks import defaults, glue
from distilbert_jax.records import strict_json
from distilbert_jax.tasks.evaluator import Evaluator
from distilbert_jax.tasks.task_data import head_for, load_task_data, tokenizer_for


def task_name(task: str) -> str:
  """The config.task of a --task: "squad", "squad_v2", "custom" or the GLUE task ("glue/rte": "rte")."""
  if task.lower().startswith("squad"):
    return "squad_v2" if "v2" in task.lower() else "squad"
  return task.split("/")[-1]


def evaluation_config(name: str, data: str, model_dir: str, max_position_embeddings: int, *,
                      max_length: Optional[int] = None, batch_size: int = defaults.EVAL_BATCH_SIZE,
                      text_columns=defaults.TEXT_COLUMNS, label_column: str = defaults.LABEL_COLUMN,
                      regression: bool = False, predict_test: bool = False) -> ml_collections.ConfigDict:
  """The fine-tuning config whose evaluation `evaluate` runs. max_length: default the task's
  (defaults.MAX_LENGTH, SQuAD defaults.SQUAD_MAX_LENGTH), or max_position_embeddings if fewer;
  the bucket lengths, query length and stride are the config's, cut to shorter windows."""
  spans = name.startswith("squad")
  default_length, buckets = ((defaults.SQUAD_MAX_LENGTH, defaults.SQUAD_BUCKET_LENGTHS) if spans
                             else (defaults.MAX_LENGTH, defaults.BUCKET_LENGTHS))
  max_length = max_length or min(default_length, max_position_embeddings)
  # run_qa.py's query length and stride (64 and 128 of 384), scaled down for shorter windows.
  max_query_length = min(defaults.MAX_QUERY_LENGTH, max_length // 6)
  doc_stride = min(defaults.DOC_STRIDE, max_length // 3)
  tfds = data == "tfds"
  return ml_collections.ConfigDict(dict(
      task=name, model=dict(path=model_dir), eval=dict(batch_size=batch_size),
      squad=dict(version_2=name == "squad_v2", n_best_size=defaults.N_BEST_SIZE,
                 max_answer_length=defaults.MAX_ANSWER_LENGTH,
                 null_score_diff_threshold=defaults.NULL_SCORE_DIFF_THRESHOLD),
      data=dict(source="tfds" if tfds else "dir", dir="" if tfds else data, tfds_data_dir="", train="", eval=data,
                text_columns=tuple(text_columns), label_column=label_column, regression=regression, label_names=(),
                holdout_fraction=0.0, holdout_seed=0, tokenizer_dir="", predict_test=predict_test,
                max_length=max_length, bucket_lengths=defaults.bucket_lengths(buckets, max_length),
                doc_stride=doc_stride, max_query_length=max_query_length)))


def evaluate_main(model_dir: str, task: str, data: str, *, split: Optional[str] = None,
                  max_length: Optional[int] = None, batch_size: int = defaults.EVAL_BATCH_SIZE,
                  out_dir: Optional[str] = None, text_columns=defaults.TEXT_COLUMNS,
                  label_column: str = defaults.LABEL_COLUMN, regression: bool = False) -> dict:
  """`distilbert-jax evaluate`: metrics of a fine-tuned model directory on a task's data.

  task: a GLUE task ("rte", "glue/rte"), "squad" / "squad_v2", or "custom" with a table file.
  data: GLUE_DIR, "tfds", a SQuAD JSON file or the table file. max_length: see
  `evaluation_config`. A one-output head is scored as regression. split: that split only; a
  GLUE test split has no labels, and its predictions are written to out_dir in the benchmark's
  submission format.
  """
  model_dir = os.path.abspath(convert.hub.resolve(model_dir))  # a directory or a Hub repo id
  data = data if data == "tfds" else os.path.abspath(data)
  name = task_name(task)
  glue_task = None if name.startswith("squad") or name == "custom" else glue.get_task(name)
  test_split = glue_task is not None and split in glue_task.test_splits
  if split is not None and glue_task is not None and split not in glue_task.splits:
    raise errors.ConfigError(f"--split {split}: task {glue_task.name} has the splits "
                             f"{', '.join(s for s in glue_task.splits if s != 'train')}")
  if test_split and not out_dir:
    raise errors.ConfigError(f"--split {split}: the test split has no labels to score; add --out DIR to write "
                             f"its predictions")
  model_config = convert.read_model_config(model_dir)
  positions = model_config.max_position_embeddings
  if max_length and max_length > positions:
    raise errors.ConfigError(f"--max-length {max_length}: longer than max_position_embeddings={positions} of "
                             f"{model_dir}; use --max-length {positions} or less (longer texts are truncated)")
  one_output = model_config.num_labels == 1
  if name == "custom" and regression and not one_output:
    raise errors.ConfigError(f"--regression: {model_dir} has a {model_config.num_labels}-class head, not the one "
                             f"output of a regression head")
  config = evaluation_config(name, data, model_dir, positions, max_length=max_length, batch_size=batch_size,
                             text_columns=text_columns, label_column=label_column,
                             regression=regression or one_output, predict_test=test_split)
  model, params = convert.load_pretrained(model_dir, head=head_for(config.task))
  if config.task == "custom" and not config.data.regression:  # the model's own label names give the classes
    config.data.label_names = tuple(model.config.id2label or ())
  task_data = load_task_data(config, tokenizer_for(config), splits=("eval",))
  if split is not None:
    task_data.evals = [e for e in task_data.evals if e.name == split]
    task_data.tests = [e for e in task_data.tests if e.name == split]
  if not task_data.evals and not task_data.tests:
    raise errors.ConfigError(f"{data}: no split {split!r} for task {task!r}" if split else
                             f"{data}: no evaluation split found for task {task!r}")
  evaluator = Evaluator(model, task_data, config)
  metrics, predictions = evaluator.evaluate(params)
  if task_data.tests:
    written = evaluator.write_test_predictions(params, storage.path(out_dir))
    metrics.update(num_examples=sum(len(t.examples) for t in task_data.tests))
    print(f"predictions of the unlabelled {split} split written to {', '.join(map(str, written))}")
  elif out_dir:
    evaluator.write(storage.path(out_dir), metrics, predictions)
  print(strict_json(metrics), end="")
  return metrics

