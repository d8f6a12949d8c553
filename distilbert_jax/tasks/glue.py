"""Sequence-classification tasks: GLUE and the user's own tables, tokenized, scored, submitted.

The one module to import: its names come from glue_tasks.py (the task table and Examples),
glue_readers.py, glue_metrics.py and glue_scoring.py (metrics and submission files); `encode`
is here.

Three readers return one `Examples` type:

  read_glue(glue_dir, task, split)        the GLUE download script's layout, GLUE_DIR/CoLA/train.tsv
  read_tfds(task, split, data_dir=None)   TFDS `glue/<task>` through `tfds.data_source` (array_record,
                                          no TensorFlow); the dataset must already be prepared
  read_table(path, text_columns, ...)     the user's .tsv, .csv or .jsonl file

Labels are class indices into `task.label_names`, in the order of transformers' GLUE
processors (MNLI: contradiction, entailment, neutral; RTE and QNLI: entailment,
not_entailment; the other classification tasks: "0", "1"), so a model fine-tuned here has the
label ids of Hugging Face GLUE checkpoints. TFDS orders MNLI's classes differently; `read_tfds`
maps them by name. STS-B is regression: float32 scores, one model output.

`encode` tokenizes into right-padded [n, max_length] arrays plus each example's real length:
`batch[:, :L]` is exact for every row whose length is at most L, which is how a bucketing input
pipeline (`input_pipeline.plan_epoch` takes the lengths) cuts padding.

Metrics are those of the GLUE benchmark; `main_metric` is what model selection should compare:
MRPC and QQP report F1 and accuracy and STS-B Pearson and Spearman, and their main metric is
`combined_score`, the mean of the two, as the GLUE leaderboard averages them into the GLUE
score (and transformers' run_glue.py names it). MNLI's matched and mismatched dev sets are two
splits (`task.dev_splits`), each scored with accuracy.

Bad input policy: an unknown task or split, a missing file or column, an empty file, a label
outside the label set or a score that is not a number raise `TaskDataError` naming the file (and
line). A row with too few fields or a line that is not a JSON object is skipped, counted and
logged, as TFDS and transformers skip QQP's few broken rows.
"""
from __future__ import annotations

import numpy as np

from distilbert_jax.tasks.glue_metrics import METRICS, accuracy, f1, matthews_correlation, pearson, spearmanr
from distilbert_jax.tasks.glue_readers import read_glue, read_table, read_tfds, read_tsv_rows
from distilbert_jax.tasks.glue_scoring import compute_metrics, predicted_labels, submission_file_name, \
    write_submission
from distilbert_jax.tasks.glue_tasks import TASKS, Examples, Task, TaskDataError, get_task, main_metric, make_task

__all__ = ["METRICS", "TASKS", "Examples", "Task", "TaskDataError", "accuracy", "compute_metrics", "encode", "f1",
           "get_task", "main_metric", "make_task", "matthews_correlation", "pearson", "predicted_labels",
           "read_glue", "read_table", "read_tfds", "read_tsv_rows", "spearmanr", "submission_file_name",
           "write_submission"]


def encode(examples: Examples, tokenizer, max_length: int, chunk_size: int = 8192) -> dict[str, np.ndarray]:
  """Tokenize with a Hugging Face (fast) tokenizer into fixed, right-padded arrays.

  Pairs are truncated "longest_first" (the longer text loses tokens first), as run_glue.py.
  Returns input_ids, attention_mask, token_type_ids: int32 [n, max_length]; lengths: int32 [n],
  the real tokens of each row ([CLS] and [SEP]s included); labels: [n] (int32 or float32),
  only when the examples have labels.
  """
  out = {k: np.zeros((len(examples), max_length), np.int32)
         for k in ("input_ids", "attention_mask", "token_type_ids")}
  for start in range(0, len(examples), chunk_size):
    stop = min(start + chunk_size, len(examples))
    text_b = examples.text_b[start:stop] if examples.text_b is not None else None
    # Padding and truncation are explicit: some tokenizer configs (all-MiniLM-L6-v2's) pad every
    # text to a fixed 128 by default.
    batch = tokenizer(examples.text_a[start:stop], text_b, max_length=max_length,
                      truncation="longest_first", padding="max_length", padding_side="right",
                      return_attention_mask=True, return_token_type_ids=True)
    for key in out:
      out[key][start:stop] = np.asarray(batch[key], np.int32)
  out["lengths"] = out["attention_mask"].sum(axis=1).astype(np.int32)
  if examples.labels is not None:
    out["labels"] = examples.labels
  return out
