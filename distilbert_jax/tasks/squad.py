"""Extractive question answering (SQuAD v1.1 and v2.0): reading, features, answers, scores.

  examples = read_squad("dev-v1.1.json")               # or read_tfds("dev", "v1.1")
  features = prepare_features(examples, tokenizer, max_length=384, doc_stride=128, training=False)
  # ... model -> start_logits, end_logits: [num_features, length] ...
  predictions = postprocess(examples, features, start_logits, end_logits)   # {id: answer text}
  scores = evaluate(examples, predictions)              # {"exact_match": .., "f1": ..} x100
  write_predictions("predictions.json", predictions)

Features follow transformers' run_qa.py: question first, context second, truncated
"only_second" into windows of `max_length` tokens that overlap by `doc_stride` tokens, so a
long context gives several features; `features.example_index` says whose each one is. For
training, each feature's target is the answer's first and last token when the whole answer is
inside its window, else the [CLS] token (index 0), which is also the target of v2.0's
unanswerable questions. Questions lose leading whitespace (some SQuAD questions start with
spaces that would eat the window) and are cut to `max_query_length` tokens, as the original
BERT code does, so every window has room for context.

Scores follow the official evaluation scripts: answers normalised by lowercasing and removing
punctuation, the articles a/an/the and extra whitespace; exact match and token F1 take the
best over the gold answers and are averaged, times 100. With v2.0 data an unanswerable
question's only gold answer is "" (the prediction must be "" to score). F1 uses the v2.0
script's rule for empty answers (1 if both are empty, else 0); v1.1's script gives 0 even when
both are empty, which can differ only for a gold answer made of articles and punctuation.

Bad input policy: a missing or malformed file raises `SquadDataError` naming it. A training
answer not found at its answer_start in the context is counted, logged with a few ids and its
example left out of the training features (`features.skipped_ids`), never a crash.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import string
from pathlib import Path
from typing import Optional, Sequence, Union

from absl import logging
import numpy as np

from distilbert_jax import atomic, errors
from distilbert_jax.data.sources import open_tfds


class SquadDataError(errors.Error, ValueError):
  """A SQuAD file or dataset that cannot be read."""


@dataclasses.dataclass
class Example:
  id: str
  title: str
  question: str
  context: str
  answer_texts: list[str]      # gold answers; empty for v2.0's unanswerable questions
  answer_starts: list[int]     # character offsets of the answers in `context`
  is_impossible: bool = False


def read_squad(path: Union[str, os.PathLike]) -> list[Example]:
  """The questions of an official SQuAD JSON file (v1.1 or v2.0).

  A question marked `is_impossible`, or with no answers, is unanswerable (v2.0), as the official
  v2.0 script scores it. v2.0's `plausible_answers` of unanswerable questions are not read:
  they are no training target (run_qa.py does not use them either) and the scripts do not
  score them.
  """
  path = Path(path)
  if not path.is_file():
    raise SquadDataError(f"{path}: no such file")
  try:
    with open(path, encoding="utf-8") as f:
      articles = json.load(f)["data"]
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SquadDataError(f"{path}: not a JSON file: {e}") from None
  except (KeyError, TypeError):
    raise SquadDataError(f"{path}: no \"data\" list, not a SQuAD file") from None
  examples = []
  try:
    for article in articles:
      for paragraph in article["paragraphs"]:
        for qa in paragraph["qas"]:
          impossible = bool(qa.get("is_impossible", False)) or not qa["answers"]
          answers = [] if impossible else qa["answers"]
          examples.append(Example(
              str(qa["id"]), article.get("title", ""), qa["question"], paragraph["context"],
              [a["text"] for a in answers], [int(a["answer_start"]) for a in answers], impossible))
  except (KeyError, TypeError) as e:
    raise SquadDataError(f"{path}: question {len(examples) + 1}: missing or malformed field {e}") from None
  if not examples:
    raise SquadDataError(f"{path}: no questions")
  return examples


def has_unanswerable(examples: Sequence[Example]) -> bool:
  """Whether the examples are SQuAD v2.0 data: some question has no answer."""
  return any(e.is_impossible for e in examples)


def _text(value) -> str:
  if isinstance(value, np.ndarray):
    value = value.item()
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds(split: str, version: str = "v1.1", data_dir: Optional[str] = None) -> list[Example]:
  """TFDS `squad/<version>` ("v1.1" or "v2.0") through `tfds.data_source` (array_record, no
  TensorFlow); `split` "train" or "dev" (TFDS's "validation"). The dataset must be prepared."""
  name, tfds_split = f"squad/{version}", split.replace("dev", "validation")
  source = open_tfds(name, tfds_split, SquadDataError, data_dir=data_dir)
  examples = []
  for index in range(len(source)):
    record = source[index]
    missing = {"id", "question", "context", "answers"} - set(record)
    if missing:
      raise SquadDataError(f"{name}:{tfds_split}: records have no field(s) {sorted(missing)}")
    # A Sequence of dicts decodes to a dict of arrays: answers = {"text": [...], "answer_start": [...]}.
    answers = record["answers"]
    examples.append(Example(
        _text(record["id"]), _text(record.get("title", "")), _text(record["question"]),
        _text(record["context"]), [_text(t) for t in answers["text"]],
        [int(s) for s in answers["answer_start"]],
        bool(record.get("is_impossible", False)) or not len(answers["text"])))
  if not examples:
    raise SquadDataError(f"{name}:{tfds_split}: empty split, no questions")
  return examples


# ---------------------------------------------------------------------------------------------
# Features


@dataclasses.dataclass
class Features:
  """Tokenized windows: several per example when its context is longer than one window."""
  input_ids: np.ndarray         # [num_features, max_length] int32, right-padded
  attention_mask: np.ndarray    # [num_features, max_length] int32
  token_type_ids: np.ndarray    # [num_features, max_length] int32: 0 question, 1 context
  example_index: np.ndarray     # [num_features] int32: index into the examples list
  offsets: np.ndarray           # [num_features, max_length, 2] int32: character span of each
                                # context token in its context; (-1, -1) for other tokens
  start_positions: Optional[np.ndarray] = None  # [num_features] int32 (training): answer's
  end_positions: Optional[np.ndarray] = None    # first/last token, 0 ([CLS]) if not in window
  skipped_ids: list[str] = dataclasses.field(default_factory=list)  # misaligned answers

  def __len__(self) -> int:
    return len(self.input_ids)

  def arrays(self) -> dict[str, np.ndarray]:
    """The model's inputs (and training targets) by name, for a batch iterator."""
    names = ["input_ids", "attention_mask", "token_type_ids"]
    if self.start_positions is not None:
      names += ["start_positions", "end_positions"]
    return {name: getattr(self, name) for name in names}


def _answer_found(example: Example) -> bool:
  if example.is_impossible:
    return True
  if not example.answer_texts:
    return False
  start, text = example.answer_starts[0], example.answer_texts[0]
  return 0 <= start and example.context[start:start + len(text)] == text and bool(text.strip())


def _cut_questions(questions: list[str], tokenizer, max_query_length: int) -> list[str]:
  """Questions cut to their first `max_query_length` tokens."""
  tokenized = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
  return [q[:offsets[max_query_length - 1][1]] if len(offsets) > max_query_length else q
          for q, offsets in zip(questions, tokenized["offset_mapping"])]


def prepare_features(examples: Sequence[Example], tokenizer, max_length: int = 384,
                     doc_stride: int = 128, training: bool = False,
                     max_query_length: int = 64) -> Features:
  """Tokenize question/context pairs into overlapping windows (a fast tokenizer is needed).

  training=True adds start_positions/end_positions (only the first gold answer is a target)
  and leaves out examples whose answer text is not at its answer_start (`skipped_ids`).
  """
  if doc_stride >= max_length - max_query_length - 3:
    raise errors.ConfigError(
        f"doc_stride {doc_stride} must be below max_length {max_length} - max_query_length "
        f"{max_query_length} - 3 ([CLS] and two [SEP]), or a window may hold no new context")
  keep = list(range(len(examples)))
  skipped = []
  if training:
    keep = [i for i in keep if _answer_found(examples[i])]
    skipped = [examples[i].id for i in sorted(set(range(len(examples))) - set(keep))]
    if skipped:
      logging.warning("%d of %d training answers are not at their answer_start in the context; "
                      "those questions are left out, e.g. %s", len(skipped), len(examples),
                      ", ".join(skipped[:5]))
  if not keep:
    raise SquadDataError("no questions to tokenize" if not examples else
                         f"none of the {len(examples)} training answers is at its answer_start in its context")
  questions = _cut_questions([examples[i].question.lstrip() for i in keep], tokenizer, max_query_length)
  encoded = tokenizer(questions, [examples[i].context for i in keep], truncation="only_second",
                      max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                      return_offsets_mapping=True, padding="max_length", padding_side="right",
                      return_attention_mask=True, return_token_type_ids=True)
  num_features = len(encoded["input_ids"])
  example_index = np.asarray(keep, np.int32)[np.asarray(encoded["overflow_to_sample_mapping"], np.int64)]
  offsets = np.asarray(encoded["offset_mapping"], np.int32).reshape(num_features, max_length, 2)
  is_context = np.array([[s == 1 for s in encoded.sequence_ids(i)] for i in range(num_features)])
  offsets[~is_context] = -1
  features = Features(*(np.asarray(encoded[k], np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")),
                      example_index=example_index, offsets=offsets, skipped_ids=skipped)
  if training:
    features.start_positions, features.end_positions = _targets(examples, features)
  return features


def _targets(examples: Sequence[Example], features: Features) -> tuple[np.ndarray, np.ndarray]:
  """Token start/end of each feature's answer; 0 ([CLS]) unless the whole answer is inside."""
  starts = np.zeros(len(features), np.int32)
  ends = np.zeros(len(features), np.int32)
  for f, e in enumerate(features.example_index):
    example = examples[e]
    if example.is_impossible:
      continue
    start_char = example.answer_starts[0]
    end_char = start_char + len(example.answer_texts[0])
    context = np.flatnonzero(features.offsets[f, :, 0] >= 0)
    if not context.size:
      continue  # an empty context
    token_starts, token_ends = features.offsets[f, context, 0], features.offsets[f, context, 1]
    if token_starts[0] > start_char or token_ends[-1] < end_char:
      continue  # the answer is not (wholly) in this window
    # The last token starting at or before the answer, the first ending at or after it.
    starts[f] = context[np.flatnonzero(token_starts <= start_char)[-1]]
    ends[f] = context[np.flatnonzero(token_ends >= end_char)[0]]
  return starts, ends


# ---------------------------------------------------------------------------------------------
# Answers from logits


def postprocess(examples: Sequence[Example], features: Features, start_logits, end_logits,
                n_best_size: int = 20, max_answer_length: int = 30, version_2: bool = False,
                null_score_diff_threshold: float = 0.0) -> dict[str, str]:
  """The best answer text of each example over all its features, as run_qa.py.

  start_logits, end_logits: [num_features, length], length <= max_length (a batch may be cut
  to its longest row: the cut tokens are padding). The candidates of a feature are the pairs of
  its `n_best_size` best start and end tokens that are context tokens, end >= start and at most
  `max_answer_length` tokens long, scored start_logit + end_logit; the answer is the original
  context text from the start token's first character to the end token's last. version_2: ""
  when the best null score ([CLS] start + end, the lowest over the features) beats the best
  span by more than `null_score_diff_threshold`. Returns {question id: text} ("" if no span).
  """
  best, null = best_spans(features, start_logits, end_logits, n_best_size, max_answer_length)
  predictions = {}
  for e, example in enumerate(examples):
    if e not in null:
      continue  # no feature (left out of training features)
    if e not in best:
      predictions[example.id] = ""
      continue
    score, start_char, end_char = best[e]
    if version_2 and null[e] - score > null_score_diff_threshold:
      predictions[example.id] = ""
    else:
      predictions[example.id] = example.context[start_char:end_char]
  return predictions


def best_spans(features: Features, start_logits, end_logits, n_best_size: int = 20,
               max_answer_length: int = 30) -> tuple[dict, dict]:
  """The n-best span search of `postprocess`, in character offsets: ({example index: (score,
  start char, end char)} of the best span over each example's features, {example index: its
  lowest null score}). An example with features but no valid span is only in the second."""
  start_logits, end_logits = np.asarray(start_logits, np.float32), np.asarray(end_logits, np.float32)
  if start_logits.shape != end_logits.shape or start_logits.shape[0] != len(features):
    raise ValueError(f"logits {start_logits.shape} and {end_logits.shape} for {len(features)} features")
  length = start_logits.shape[1]
  best = {}   # example index -> (score, start char, end char)
  null = {}   # example index -> lowest null score over its features
  for f, e in enumerate(features.example_index):
    offsets = features.offsets[f, :length]
    starts = np.argsort(start_logits[f])[::-1][:n_best_size]
    ends = np.argsort(end_logits[f])[::-1][:n_best_size]
    s, t = np.meshgrid(starts, ends, indexing="ij")
    s, t = s.ravel(), t.ravel()
    valid = (offsets[s, 0] >= 0) & (offsets[t, 0] >= 0) & (t >= s) & (t - s + 1 <= max_answer_length)
    null_score = float(start_logits[f, 0] + end_logits[f, 0])
    null[e] = min(null.get(e, np.inf), null_score)
    if not valid.any():
      continue
    s, t = s[valid], t[valid]
    scores = start_logits[f, s] + end_logits[f, t]
    k = int(np.argmax(scores))
    if e not in best or scores[k] > best[e][0]:
      best[e] = (float(scores[k]), int(offsets[s[k], 0]), int(offsets[t[k], 1]))
  return best, null


# ---------------------------------------------------------------------------------------------
# Scores


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """Lowercase, drop punctuation, the articles a/an/the and extra whitespace (official scripts)."""
  text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
  """Token F1 of the normalised answers; with an empty side, 1 if both are empty else 0."""
  predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not predicted or not expected:
    return float(predicted == expected)
  same = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(predicted), same / len(expected)
  return 2 * precision * recall / (precision + recall)


def evaluate(examples: Sequence[Example], predictions: dict[str, str],
             version_2: Optional[bool] = None) -> dict[str, float]:
  """exact_match and f1 (x100) over all examples; a question without a prediction scores 0.

  version_2: default True when any example is unanswerable; adds HasAns_/NoAns_ exact and f1
  (as the official v2.0 script) where there are such questions. An unanswerable question's
  only gold answer is "", whatever version_2 says.
  """
  if version_2 is None:
    version_2 = has_unanswerable(examples)
  exact, f1, has_answer = [], [], []
  for example in examples:
    golds = example.answer_texts
    if version_2:  # the v2.0 script drops gold answers that normalise to nothing
      golds = [g for g in golds if normalize_answer(g)]
    golds = golds or [""]
    prediction = predictions.get(example.id)
    exact.append(0.0 if prediction is None else max(exact_match_score(prediction, g) for g in golds))
    f1.append(0.0 if prediction is None else max(f1_score(prediction, g) for g in golds))
    has_answer.append(not example.is_impossible)
  if not examples:
    raise ValueError("no examples to evaluate")
  exact, f1, has_answer = np.asarray(exact), np.asarray(f1), np.asarray(has_answer)
  result = {"exact_match": 100 * float(exact.mean()), "f1": 100 * float(f1.mean())}
  if version_2:
    for prefix, mask in (("HasAns", has_answer), ("NoAns", ~has_answer)):
      if mask.any():
        result[f"{prefix}_exact"] = 100 * float(exact[mask].mean())
        result[f"{prefix}_f1"] = 100 * float(f1[mask].mean())
  return result


def write_predictions(path: Union[str, os.PathLike], predictions: dict[str, str]) -> Path:
  """predictions.json, {question id: answer text}, the official scripts' input; atomic."""
  return atomic.write_text(path, json.dumps(predictions, ensure_ascii=False, indent=1) + "\n")
