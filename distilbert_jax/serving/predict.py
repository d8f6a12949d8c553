"""`distilbert-jax predict`: a fine-tuned model's label, score or answer span for each input row.

  distilbert-jax predict --model runs/rte/export --input pairs.tsv --out predictions.jsonl

  predictor = Predictor(model_dir)                  # parameters put on the device once
  records = predictor.predict_rows([("A text.",), ("A premise.", "A hypothesis.")])

The head is the model directory's: a sequence classifier gives {"label": NAME, "probabilities":
{NAME: p, ...}} (names from config.json's id2label), a one-output or `problem_type: regression`
head {"score": x}, a question-answering head {"answer": TEXT, "start": i, "end": j, "score": s}
with context[i:j] == TEXT, found by tasks/squad.py's windows and n-best span search (start and
end are null when no span is valid).

Rows are tokenized as `finetune` tokenizes them (glue.encode's truncation, squad.prepare_features'
windows), sorted by length into buckets, and run in fixed [batch_size, bucket] batches, so each
bucket compiles once, ahead of time (`warm_up` compiles them all before the first request, as a
server starts). At batch size 1 the classification buckets are every multiple of 8 tokens: a
request then pays for at most 7 padding tokens, against up to its own length with powers of
two (a pair of 21 tokens runs as 24, not 32: on STS-B, 13% more tokens than the rows have,
against 34% with steps of 16). `dtype=jnp.bfloat16` computes in bfloat16 with bfloat16
parameters (inference keeps no float32 master copy). The input is read in chunks: each chunk is predicted and its records are
written in input order and flushed before the next is read, so a long input streams and what
was written stays whole. A bad row is reported on stderr and written as {"line": N, "error": ...}
in its place, so the i-th output line is the i-th input row.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax import convert, errors, storage
from distilbert_jax import records as records_json
from distilbert_jax.serving import inputs
from distilbert_jax.tasks import defaults, squad
from distilbert_jax.tasks.evaluate_command import evaluation_config
from distilbert_jax.tasks.evaluator import make_predict

# Sequence classification: powers of two from 16, at most twice the real length in padding and
# few compiles; at batch size 1, every multiple of BUCKET_STEP. Question answering: SQuAD's
# window buckets. All cut at the max length.
CLASSIFICATION_BUCKETS = (16, 32, 64, 128, 256, 512)
BUCKET_STEP = 8
CHUNK_ROWS = 2048
HEADS = ("sequence_classification", "question_answering")


def read_head(model_dir: str) -> tuple[str, bool]:
  """(the head of a model directory, whether it is a regression head) from its config.json."""
  config_file = Path(model_dir) / "config.json"
  try:
    hf_config = json.loads(config_file.read_text())
  except (OSError, ValueError) as e:
    raise errors.ConfigError(f"{config_file}: cannot read the model config: {str(e).splitlines()[0]}") from None
  head = hf_config.get(convert.FLAX_HEAD_KEY) or convert.head_from_architectures(hf_config, str(config_file))
  if head not in HEADS:
    raise errors.ConfigError(f"{model_dir}: a {head} model has no predictions; predict needs a sequence "
                             f"classification or question answering head (embed gives sentence embeddings)")
  regression = hf_config.get("problem_type") == "regression" or hf_config.get("num_labels") == 1 or \
      len(hf_config.get("id2label") or {0: 0, 1: 1}) == 1
  return head, regression


class Predictor:
  """A model directory's predictions on rows of text, in fixed-shape length-bucketed batches."""

  def __init__(self, model_dir: str, *, batch_size: int = 32, max_length: Optional[int] = None,
               dtype=jnp.float32, buckets: Optional[Sequence[int]] = None):
    import transformers
    model_dir = convert.hub.resolve(model_dir)  # a directory, or a Hub repo id
    self.head, self.regression = read_head(model_dir)
    self.spans = self.head == "question_answering"
    positions = convert.read_model_config(model_dir).max_position_embeddings
    if max_length and max_length > positions:
      raise errors.ConfigError(f"--max-length {max_length}: longer than max_position_embeddings={positions} of "
                               f"{model_dir}")
    if batch_size < 1:
      raise errors.ConfigError(f"--batch-size {batch_size}: must be at least 1")
    # SQuAD's query length and stride, scaled to the window as `evaluate` scales them.
    data = evaluation_config("squad" if self.spans else "custom", "", model_dir, positions,
                             max_length=max_length).data
    self.max_length, self.doc_stride, self.max_query_length = data.max_length, data.doc_stride, data.max_query_length
    if buckets is None:
      buckets = defaults.SQUAD_BUCKET_LENGTHS if self.spans else \
          CLASSIFICATION_BUCKETS if batch_size > 1 else range(BUCKET_STEP, self.max_length + BUCKET_STEP, BUCKET_STEP)
    self.buckets = defaults.bucket_lengths(tuple(buckets), self.max_length)
    self.batch_size = batch_size
    # On the device already (load_pretrained), so no call copies them in.
    self.model, self.params = convert.load_pretrained(model_dir, head=self.head, dtype=dtype, param_dtype=dtype)
    self.label_names = self.model.config.id2label or tuple(f"LABEL_{i}" for i in range(self.model.config.num_labels))
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    self._forward = make_predict(self.model, self.head)  # jitted: one compile per [batch_size, bucket]
    self._compiled = {}  # bucket length -> the forward compiled ahead of time for [batch_size, length]

  def compiled_forward(self, length: int):
    """The forward for int32 [batch_size, length] batches, lowered and compiled once: a call
    then goes straight to the executable, with no tracing or cache look-up by argument shapes."""
    if length not in self._compiled:
      shape = jax.ShapeDtypeStruct((self.batch_size, length), jnp.int32)
      batch = {name: shape for name in ("input_ids", "attention_mask", "token_type_ids")}
      self._compiled[length] = self._forward.lower(self.params, batch).compile()
    return self._compiled[length]

  def warm_up(self, lengths: Optional[Iterable[int]] = None) -> None:
    """Compiles the forward of every bucket (or of the buckets of `lengths`) before any row."""
    chosen = self.buckets if lengths is None else sorted({self.bucket_of(n) for n in lengths})
    for length in chosen:
      self.compiled_forward(length)

  def bucket_of(self, length: int) -> int:
    """The bucket a row of `length` tokens runs in: the shortest that holds it."""
    return self.buckets[min(int(np.searchsorted(np.asarray(self.buckets), length)), len(self.buckets) - 1)]

  @property
  def text_fields(self) -> tuple[int, ...]:
    """The tab-separated fields of a text input line: a text or a pair; (question, context)."""
    return (2,) if self.spans else (1, 2)

  @property
  def columns(self) -> tuple:
    return inputs.QA_COLUMNS if self.spans else inputs.PAIR_COLUMNS

  def outputs(self, arrays: dict) -> tuple:
    """Model outputs of every row of `arrays` (int32 [n, L] input_ids, attention_mask,
    token_type_ids, and lengths [n]), in row order: ([n, C],) or ([n, L], [n, L]) with -1e9 past
    each row's bucket."""
    lengths = arrays["lengths"]
    n, full = arrays["input_ids"].shape
    bucket_of = np.searchsorted(np.asarray(self.buckets), lengths)
    results = None
    for bucket_index in np.unique(bucket_of):
      length = self.buckets[bucket_index]
      rows = np.flatnonzero(bucket_of == bucket_index)
      rows = rows[np.argsort(lengths[rows], kind="stable")]
      for start in range(0, len(rows), self.batch_size):
        batch_rows = rows[start:start + self.batch_size]
        batch = {}
        for name in ("input_ids", "attention_mask", "token_type_ids"):
          batch[name] = np.zeros((self.batch_size, length), np.int32)  # padding rows: all masked
          batch[name][:len(batch_rows), :min(length, full)] = arrays[name][batch_rows, :length]
        # The one device-to-host copy of a batch: its outputs, after the whole forward ran.
        outs = tuple(np.asarray(o) for o in self.compiled_forward(length)(self.params, batch))
        if results is None:
          results = tuple(np.full((n, full), -1e9, np.float32) if self.spans else
                          np.zeros((n,) + o.shape[1:], np.float32) for o in outs)
        for result, o in zip(results, outs):
          result[batch_rows, :o.shape[1]] = o[:len(batch_rows)]
    return results

  def encode(self, texts: Sequence[tuple[str, ...]]) -> dict:
    """glue.encode's tokens (truncation longest_first), padded with zeros to the longest row
    (each batch pads again to its bucket)."""
    encoded = [None] * len(texts)
    for width in (1, 2):  # single texts and pairs are tokenized apart
      rows = [i for i, t in enumerate(texts) if len(t) == width]
      if not rows:
        continue
      pairs = [texts[i][1] for i in rows] if width == 2 else None
      batch = self.tokenizer([texts[i][0] for i in rows], pairs, max_length=self.max_length,
                             truncation="longest_first", return_attention_mask=True, return_token_type_ids=True)
      for j, i in enumerate(rows):
        encoded[i] = (batch["input_ids"][j], batch["attention_mask"][j], batch["token_type_ids"][j])
    lengths = np.asarray([len(ids) for ids, _, _ in encoded], np.int32)
    arrays = {k: np.zeros((len(texts), int(lengths.max())), np.int32)
              for k in ("input_ids", "attention_mask", "token_type_ids")}
    for i, row in enumerate(encoded):
      for key, values in zip(("input_ids", "attention_mask", "token_type_ids"), row):
        arrays[key][i, :lengths[i]] = values
    arrays["lengths"] = lengths
    return arrays

  def predict_rows(self, texts: Sequence[tuple[str, ...]]) -> list[dict]:
    """One record per row, in order: (text,) or (text_a, text_b); (question, context) for QA."""
    if not texts:
      return []
    if self.spans:
      return self._answers(texts)
    (logits,) = self.outputs(self.encode(texts))
    if self.regression:
      return [{"score": float(x[0])} for x in logits]
    logits = logits.astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return [{"label": self.label_names[int(np.argmax(p))],
             "probabilities": {name: float(v) for name, v in zip(self.label_names, p)}} for p in probabilities]

  def _answers(self, texts: Sequence[tuple[str, ...]]) -> list[dict]:
    examples = [squad.Example(str(i), "", question, context, [], [], False)
                for i, (question, context) in enumerate(texts)]
    features = squad.prepare_features(examples, self.tokenizer, self.max_length, self.doc_stride,
                                      max_query_length=self.max_query_length)
    arrays = dict(features.arrays(), lengths=features.attention_mask.sum(axis=1).astype(np.int32))
    start_logits, end_logits = self.outputs(arrays)
    best, _ = squad.best_spans(features, start_logits, end_logits, defaults.N_BEST_SIZE,
                               defaults.MAX_ANSWER_LENGTH)
    records = []
    for i, example in enumerate(examples):
      if i not in best:
        records.append({"answer": "", "start": None, "end": None, "score": None})
        continue
      score, start, end = best[i]
      records.append({"answer": example.context[start:end], "start": start, "end": end, "score": score})
    return records


class JsonLinesOut:
  """Records as JSON lines to `path` (its parents made) or stdout, flushed after each chunk: the
  lines written stay whole if the run stops. The file is opened at the first write, so a run
  that fails before leaves an existing `path` as it was. A gs:// `path` is written locally and
  uploaded by `close` (object storage cannot append): all or nothing there."""

  def __init__(self, path: Optional[str]):
    self.path, self._file = path, None if path else sys.stdout
    self._staging = None

  def write(self, records: Iterable[dict]) -> None:
    if self._file is None:
      local = self.path
      if storage.is_remote(self.path):
        self._staging = tempfile.mkdtemp(prefix="distilbert-jax-out-")
        local = os.path.join(self._staging, "out.jsonl")
      Path(local).parent.mkdir(parents=True, exist_ok=True)
      self._file = open(local, "w", encoding="utf-8", newline="\n")
    self._file.write("".join(json.dumps(records_json.defined(r), ensure_ascii=False, default=_jsonable) + "\n" for r in records))
    self._file.flush()

  def close(self) -> None:
    if self.path and self._file is not None:
      self._file.close()
      if self._staging:
        try:
          storage.upload_file(os.path.join(self._staging, "out.jsonl"), self.path)
        finally:
          shutil.rmtree(self._staging, ignore_errors=True)


def _jsonable(value):
  if isinstance(value, np.ndarray):  # an embedding
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON")


def in_chunks(rows: Iterable, size: int) -> Iterator[list]:
  chunk = []
  for row in rows:
    chunk.append(row)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def progress_bar(path: str, unit: str = "row"):
  """A tqdm bar of rows on stderr, shown when stderr is a terminal or the input is large (over
  CHUNK_ROWS lines; then it updates every 30 s, for logs)."""
  import tqdm
  total = None
  if path != inputs.STDIN:
    with open(path, "rb") as f:
      total = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
  tty = sys.stderr.isatty()
  large = total is not None and total > CHUNK_ROWS
  return tqdm.tqdm(total=total, unit=unit, disable=not (tty or large), mininterval=0.1 if tty else 30.0,
                   dynamic_ncols=True, file=sys.stderr)


def run_rows(rows: inputs.InputRows, predict, out: JsonLinesOut, chunk_rows: int = CHUNK_ROWS) -> tuple[int, int]:
  """Streams `rows` through predict([texts]) -> [record] chunk by chunk into `out`, with error
  records in the places of bad rows. Returns (good rows, bad rows)."""
  good = bad = 0
  with progress_bar(rows.path) as bar:
    for chunk in in_chunks(rows, chunk_rows):
      texts = [r.texts for r in chunk if isinstance(r, inputs.Row)]
      predicted = iter(predict(texts))
      records = []
      for r in chunk:
        if isinstance(r, inputs.BadRow):
          inputs.report_bad_row(rows.name, r)
          records.append({"line": r.line, "error": r.error})
        else:
          records.append(next(predicted))
      out.write(records)
      good, bad = good + len(texts), bad + len(chunk) - len(texts)
      bar.update(len(chunk))
  return good, bad


def predict_main(model_dir: str, input_path: str, out: Optional[str] = None, *, batch_size: int = 32,
                 max_length: Optional[int] = None, text_columns: Optional[Sequence[str]] = None) -> tuple[int, int]:
  """`distilbert-jax predict`. Returns (rows predicted, rows skipped)."""
  inputs.check_input(input_path)
  if out and os.path.abspath(out) == os.path.abspath(input_path):
    raise errors.ConfigError(f"{out}: --out would overwrite the input")
  predictor = Predictor(model_dir, batch_size=batch_size, max_length=max_length)
  with inputs.InputRows(input_path, predictor.columns, text_columns=text_columns,
                        text_fields=predictor.text_fields) as rows:
    sink = JsonLinesOut(out)
    try:
      good, bad = run_rows(rows, predictor.predict_rows, sink, CHUNK_ROWS)
      sink.write([])  # an input of no rows still gives its (empty) output
    finally:
      sink.close()
  if bad:
    print(f"distilbert-jax: {bad} bad row(s) of {rows.name} skipped; their lines are error records",
          file=sys.stderr)
  return good, bad
