"""Sentence-embedding evaluation: STS Spearman, teacher/student agreement, speed, report.png.

Embeddings pool the last hidden states as the model directory's sentence-transformers files say
(modules.json, 1_Pooling/config.json: mean, cls or max over real tokens, then L2-normalised when
a Normalize module follows), and as sentence-transformers does without them: the mean over real
tokens. all-MiniLM-L6-v2 is mean pooled and normalised. STS quality is the Spearman correlation (times 100) between the cosine similarity of the two
sentences' embeddings and the human score, the metric of the GLUE STS-B task.
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from distilbert_jax import atomic, convert, errors, models, storage


class EvaluationError(errors.Error, ValueError):
  """An evaluation file or model that cannot be used; the message names it."""


DEFAULT_MAX_LENGTH = 128  # without a sentence_bert_config.json max_seq_length


def pool(hidden, attention_mask, pooling: convert.SentencePooling):
  """hidden [n, length, d], attention_mask [n, length] -> [n, d * len(pooling.modes)], each mode
  as sentence-transformers' Pooling computes it over the real tokens, then its Normalize."""
  real = attention_mask.astype(bool)
  weights = real[..., None].astype(hidden.dtype)
  pooled = []
  for mode in pooling.modes:
    if mode == "mean":
      pooled.append(jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9))
    elif mode == "cls":  # the first real token: [CLS] with right padding
      first = jnp.argmax(real, axis=1)
      pooled.append(jnp.take_along_axis(hidden, first[:, None, None], axis=1)[:, 0])
    elif mode == "max":
      pooled.append(jnp.max(jnp.where(real[..., None], hidden, -jnp.inf), axis=1))
    else:
      raise ValueError(f"pooling mode {mode!r}")  # read_sentence_pooling lets no other through
  out = jnp.concatenate(pooled, axis=-1) if len(pooled) > 1 else pooled[0]
  if pooling.normalize:  # torch.nn.functional.normalize: x / max(|x|, 1e-12)
    out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
  return out


class Encoder:
  """A jitted sentence encoder over a model directory (Hugging Face or ours), pooling as its
  sentence-transformers files say (see the module docstring)."""

  def __init__(self, model_dir: str, max_length: Optional[int] = None, tokenizer_dir: Optional[str] = None,
               dtype: str = "float32"):
    """max_length: tokens kept per text (default: sentence_bert_config.json's max_seq_length, else
    128; at most the model's positions). dtype: the compute dtype ("auto": bfloat16 where the
    device computes it natively)."""
    import tokenizers
    model_dir = convert.hub.resolve(model_dir)  # a directory, or a Hub repo id
    self.model_dir = model_dir
    self.pooling = convert.read_sentence_pooling(model_dir)
    self.model, self.params = convert.load_pretrained(model_dir, head="base", dtype=models.resolve_dtype(dtype))
    if self.pooling.dimension is not None and self.pooling.dimension != self.model.config.hidden_size:
      raise EvaluationError(f"{model_dir}: the pooling config names dimension {self.pooling.dimension} but the "
                            f"model's hidden size is {self.model.config.hidden_size}")
    max_length = max_length or self.pooling.max_seq_length or DEFAULT_MAX_LENGTH
    tokenizer_file = Path(tokenizer_dir or model_dir) / "tokenizer.json"
    if not tokenizer_file.exists():
      raise EvaluationError(f"{tokenizer_file}: no tokenizer.json beside the model")
    self.tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    # tokenizer.json may pad every text to a fixed length (all-MiniLM-L6-v2's pads to 128):
    # we pad ourselves, and count real tokens from the encodings.
    self.tokenizer.no_padding()
    # Longer texts are cut to what the model has positions for.
    max_length = min(max_length, self.model.config.max_position_embeddings)
    self.tokenizer.enable_truncation(max_length)
    self.max_length = max_length
    self._forward = jax.jit(self._embed, compiler_options=models.compiler_options("base", dtype=self.model.dtype))

  @property
  def config(self):
    return self.model.config

  @property
  def num_params(self) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))

  def _embed(self, params, input_ids, attention_mask):
    hidden = self.model.apply({"params": params}, input_ids, attention_mask=attention_mask).last_hidden_state
    return pool(hidden, attention_mask, self.pooling)

  def tokenize(self, sentences: Sequence[str], length: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """-> input_ids, attention_mask: int32 [n, length], padded to a multiple of 16 (few compiles)."""
    encodings = self.tokenizer.encode_batch(list(sentences))
    longest = max(len(e.ids) for e in encodings)
    length = length or min(self.max_length, -(-longest // 16) * 16)
    ids = np.zeros((len(encodings), length), np.int32)
    mask = np.zeros((len(encodings), length), np.int32)
    for i, e in enumerate(encodings):
      n = min(len(e.ids), length)
      ids[i, :n], mask[i, :n] = e.ids[:n], 1
    return ids, mask

  def embed(self, sentences: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """[n, hidden * number of pooling modes] float32 sentence embeddings."""
    out = []
    for start in range(0, len(sentences), batch_size):
      chunk = list(sentences[start:start + batch_size])
      n = len(chunk)
      chunk += [""] * (batch_size - n)  # a fixed batch shape: one compile per length
      ids, mask = self.tokenize(chunk)
      out.append(np.asarray(self._forward(self.params, ids, mask))[:n])
    return np.concatenate(out).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise cosine similarity of [n, d] arrays -> [n]."""
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return np.sum(a * b, axis=-1)


def read_sts_tsv(path: str) -> tuple[list[str], list[str], np.ndarray]:
  """A GLUE STS-B style file with a header naming sentence1, sentence2 and score."""
  if not os.path.isfile(path):
    raise EvaluationError(f"{path}: no such file")
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  if not rows:
    raise EvaluationError(f"{path}: empty file")
  header = rows[0]
  missing = [c for c in ("sentence1", "sentence2", "score") if c not in header]
  if missing:
    raise EvaluationError(f"{path}: header lacks column(s) {', '.join(missing)} (found {', '.join(header)})")
  i1, i2, i3 = (header.index(c) for c in ("sentence1", "sentence2", "score"))
  s1, s2, scores = [], [], []
  for line_no, row in enumerate(rows[1:], start=2):
    if len(row) <= max(i1, i2, i3):
      raise EvaluationError(f"{path}:{line_no}: expected at least {max(i1, i2, i3) + 1} columns, found {len(row)}")
    try:
      scores.append(float(row[i3]))
    except ValueError:
      raise EvaluationError(f"{path}:{line_no}: score {row[i3]!r} is not a number") from None
    s1.append(row[i1])
    s2.append(row[i2])
  if not scores:
    raise EvaluationError(f"{path}: no sentence pairs")
  return s1, s2, np.asarray(scores, np.float64)


def sts_spearman(encoder: Encoder, s1, s2, scores) -> float:
  """Spearman correlation x 100 of cosine(embedding(s1), embedding(s2)) with the scores."""
  sims = cosine(encoder.embed(s1), encoder.embed(s2))
  return 100.0 * scipy.stats.spearmanr(sims, scores).statistic


def evaluate_sts_main(model_dir: str, data: str, teacher_dir: Optional[str] = None) -> dict:
  s1, s2, scores = read_sts_tsv(data)
  model = Encoder(model_dir)
  result = {"pairs": len(scores), "model": sts_spearman(model, s1, s2, scores)}
  print(f"{len(scores)} pairs from {data}")
  print(f"model   {model_dir}: Spearman x 100 = {result['model']:.2f} ({model.pooling.describe()})")
  if teacher_dir:
    teacher = Encoder(teacher_dir)
    result["teacher"] = sts_spearman(teacher, s1, s2, scores)
    result["ratio"] = result["model"] / result["teacher"]
    print(f"teacher {teacher_dir}: Spearman x 100 = {result['teacher']:.2f} ({teacher.pooling.describe()})")
    print(f"student / teacher = {100 * result['ratio']:.1f}%")
  return result


def throughput(encoders: Sequence[Encoder], sentences: Sequence[str], batch_size: int = 32,
               repeats: int = 5) -> list[float]:
  """Sentences per second of each encoder on the same batches, timed alternately so that
  machine noise hits all of them alike; the median of `repeats` rounds."""
  ids, mask = encoders[0].tokenize(list(sentences[:batch_size]), length=64)
  times = [[] for _ in encoders]
  for enc in encoders:
    jax.block_until_ready(enc._forward(enc.params, ids, mask))  # compile
  for _ in range(repeats):
    for i, enc in enumerate(encoders):
      start = time.perf_counter()
      jax.block_until_ready(enc._forward(enc.params, ids, mask))
      times[i].append(time.perf_counter() - start)
  return [batch_size / float(np.median(t)) for t in times]


def compare_student_teacher(student: Encoder, teacher: Encoder, sentences: Sequence[str],
                            max_pairs_sentences: int = 400) -> dict:
  """Agreement on held-out sentences: mean cosine between the two models' embeddings, and the
  Spearman correlation between their pairwise-similarity rankings (over all sentence pairs)."""
  sentences = list(sentences)
  s_emb, t_emb = student.embed(sentences), teacher.embed(sentences)
  k = min(len(sentences), max_pairs_sentences)
  upper = np.triu_indices(k, 1)
  normalise = lambda e: e[:k] / np.linalg.norm(e[:k], axis=-1, keepdims=True)
  s_sims = (normalise(s_emb) @ normalise(s_emb).T)[upper]
  t_sims = (normalise(t_emb) @ normalise(t_emb).T)[upper]
  s_speed, t_speed = throughput([student, teacher], sentences)
  return {
      "teacher_layers": teacher.config.num_hidden_layers, "student_layers": student.config.num_hidden_layers,
      "teacher_params": teacher.num_params, "student_params": student.num_params,
      "teacher_sentences_per_second": t_speed, "student_sentences_per_second": s_speed,
      "mean_cosine": float(np.mean(cosine(s_emb, t_emb))),
      "pairwise_spearman": 100.0 * scipy.stats.spearmanr(s_sims, t_sims).statistic,
      "num_sentences": len(sentences), "num_pairs": int(len(s_sims)),
      "_similarities": (t_sims, s_sims),
  }


def format_table(c: dict) -> str:
  rows = [
      ("layers", f"{c['teacher_layers']}", f"{c['student_layers']}", ""),
      ("parameters", f"{c['teacher_params']:,}", f"{c['student_params']:,}",
       f"{c['student_params'] / c['teacher_params']:.2f}x"),
      ("sentences/s (this machine, batch 32 x 64)", f"{c['teacher_sentences_per_second']:.1f}",
       f"{c['student_sentences_per_second']:.1f}",
       f"{c['student_sentences_per_second'] / c['teacher_sentences_per_second']:.2f}x"),
      (f"mean cosine student vs teacher ({c['num_sentences']} held-out sentences)", "", f"{c['mean_cosine']:.4f}", ""),
      (f"Spearman x 100 of pairwise similarities ({c['num_pairs']:,} pairs)", "", f"{c['pairwise_spearman']:.2f}", ""),
  ]
  lines = ["| | teacher | student | ratio |", "|---|---|---|---|"]
  lines += [f"| {a} | {b} | {s} | {r} |" for a, b, s, r in rows]
  return "\n".join(lines)


def write_report_png(path: str, metrics_jsonl: str, similarities: tuple[np.ndarray, np.ndarray]) -> None:
  """Loss curves and a teacher-vs-student similarity scatter, written atomically."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  records = [json.loads(line) for line in storage.path(metrics_jsonl).read_text().splitlines() if line.strip()]
  fig, (ax_loss, ax_sim) = plt.subplots(1, 2, figsize=(12, 5))
  steps = [r["step"] for r in records]
  for key in sorted({k for r in records for k in r if k == "loss" or k.startswith("loss_")}):
    ax_loss.plot(steps, [r.get(key, np.nan) for r in records], label=key)
  ax_loss.set(xlabel="step", ylabel="loss", title="distillation losses", yscale="log")
  ax_loss.legend()
  t_sims, s_sims = similarities
  ax_sim.scatter(t_sims, s_sims, s=2, alpha=0.3)
  lo, hi = float(min(t_sims.min(), s_sims.min())), float(max(t_sims.max(), s_sims.max()))
  ax_sim.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
  ax_sim.set(xlabel="teacher cosine similarity", ylabel="student cosine similarity",
             title="held-out sentence pairs")
  fig.tight_layout()
  with atomic.writing(path, "wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plt.close(fig)


def check_export_matches_transformers(export_dir: str, encoder: Encoder, sentences: Sequence[str]) -> float:
  """Reloads an exported student with transformers (PyTorch) and returns the largest absolute
  difference of its last hidden states from ours at real tokens (float32)."""
  import torch
  import transformers
  ids, mask = encoder.tokenize(list(sentences))
  ours = encoder.model.apply({"params": encoder.params}, ids, attention_mask=mask).last_hidden_state
  reference = transformers.AutoModel.from_pretrained(export_dir).eval()
  with torch.no_grad():
    theirs = reference(input_ids=torch.tensor(ids, dtype=torch.long),
                       attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
  return float(np.abs(np.asarray(ours) - theirs)[mask.astype(bool)].max())


def distill_report(workdir: str, export_dir: str, teacher_dir: str, heldout_file: str,
                   max_sentences: int = 1000) -> dict:
  """The end of `make distill`: export check, teacher/student table, report.{md,json,png}."""
  sentences = [s for s in Path(heldout_file).read_text(encoding="utf-8").splitlines() if s.strip()]
  sentences = sentences[:max_sentences]
  export_dir = storage.local_copy(export_dir)  # transformers reads it too: local files
  student, teacher = Encoder(export_dir), Encoder(teacher_dir)
  export_diff = check_export_matches_transformers(export_dir, student, sentences[:32])
  if export_diff > 1e-4:
    raise EvaluationError(f"{export_dir}: transformers' outputs differ from ours by {export_diff:.2e} (> 1e-4)")
  comparison = compare_student_teacher(student, teacher, sentences)
  table = format_table(comparison)
  similarities = comparison.pop("_similarities")
  comparison["export_max_abs_diff_vs_transformers"] = export_diff
  workdir = storage.path(workdir)
  atomic.write_text(workdir / "report.md", table + "\n")
  atomic.write_text(workdir / "report.json", json.dumps(comparison, indent=2) + "\n")
  write_report_png(str(workdir / "report.png"), str(workdir / "metrics.jsonl"), similarities)
  print(f"\nexport {export_dir} reloads in transformers; max |difference| of hidden states: {export_diff:.2e}")
  print(table)
  print(f"report: {workdir / 'report.png'}")
  return comparison
