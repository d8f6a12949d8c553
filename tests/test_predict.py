"""`distilbert-jax predict` against transformers PyTorch on the same tiny random checkpoints:
labels, probabilities, scores and answer spans; input order, one compile per length bucket,
bad rows, stdin and the one-line errors."""
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import ROOT
from distilbert_jax.serving import inputs, predict
from distilbert_jax.tasks import squad

LABELS = ("negative", "neutral", "positive")
WORDS = ("the model reads every sentence of the long input file and writes its label in the same order "
         "while the buckets keep the number of compilations small").split()


def _texts(n, seed=0):
  """n texts of 1 to 50 words (3 to 60 tokens: every bucket of 16, 32 and 64), lengths shuffled."""
  rng = random.Random(seed)
  return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 50))).capitalize() + "." for _ in range(n)]


def _save(model, path, minilm):
  model.save_pretrained(path)
  for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    if (Path(minilm) / name).exists():
      shutil.copy(Path(minilm) / name, Path(path) / name)
  return str(path)


def _config(**kwargs):
  import transformers
  return transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=64, **kwargs)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, minilm):
  import torch
  import transformers
  torch.manual_seed(0)
  config = _config(id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
  return _save(transformers.BertForSequenceClassification(config), tmp_path_factory.mktemp("classifier"), minilm)


@pytest.fixture(scope="module")
def regressor(tmp_path_factory, minilm):
  import torch
  import transformers
  torch.manual_seed(1)
  config = _config(num_labels=1, problem_type="regression")
  return _save(transformers.BertForSequenceClassification(config), tmp_path_factory.mktemp("regressor"), minilm)


@pytest.fixture(scope="module")
def reader(tmp_path_factory, minilm):
  import torch
  import transformers
  torch.manual_seed(2)
  return _save(transformers.BertForQuestionAnswering(_config()), tmp_path_factory.mktemp("reader"), minilm)


def _torch_logits(model_dir, texts, pairs=None):
  """transformers' logits of each row alone (no padding), tokenized as glue.encode does."""
  import torch
  import transformers
  tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
  out = []
  with torch.no_grad():
    for i, text in enumerate(texts):
      batch = tokenizer(text, pairs[i] if pairs else None, max_length=64, truncation="longest_first",
                        return_tensors="pt")
      out.append(model(**batch).logits[0].numpy())
  return np.stack(out)


def _read_jsonl(path):
  return [json.loads(line) for line in Path(path).read_text().splitlines()]


class CompileCounter:
  """XLA compilations of the predict function (tasks/evaluator.make_predict's) while active,
  from jax.monitoring's compile event (the weight loading compiles small programs of its own)."""
  active, count = False, 0

  def __init__(self):
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event, duration, fun_name="", **_):
    if self.active and event == "/jax/core/compile/backend_compile_duration" and fun_name == "jit(predict)":
      self.count += 1


COMPILES = CompileCounter()


def test_labels_and_probabilities_equal_transformers_in_input_order(classifier, tmp_path, monkeypatch):
  texts = _texts(40)
  path = tmp_path / "texts.txt"
  path.write_text("".join(t + "\n" for t in texts))
  monkeypatch.setattr(predict, "CHUNK_ROWS", 16)  # several chunks, each sorted by length apart
  COMPILES.active, COMPILES.count = True, 0
  try:
    predict.predict_main(classifier, str(path), str(tmp_path / "out.jsonl"), batch_size=4)
  finally:
    COMPILES.active = False
  records = _read_jsonl(tmp_path / "out.jsonl")
  logits = _torch_logits(classifier, texts)
  expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  assert len(records) == len(texts)
  assert [r["label"] for r in records] == [LABELS[i] for i in logits.argmax(axis=1)]
  probabilities = np.array([[r["probabilities"][n] for n in LABELS] for r in records])
  np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
  # One compile per bucket the rows fall in, whatever the chunks and the order of lengths.
  predictor = predict.Predictor(classifier)
  lengths = predictor.encode([(t,) for t in texts])["lengths"]
  assert predictor.buckets == (16, 32, 64)
  assert COMPILES.count == len(set(np.searchsorted(predictor.buckets, lengths))) == 3


def test_pairs_from_a_csv_and_a_regression_score(classifier, regressor, tmp_path):
  texts, pairs = _texts(6, seed=1), _texts(6, seed=2)
  path = tmp_path / "pairs.csv"
  path.write_text("id,sentence1,sentence2\n" + "".join(f'{i},"{a}, quoted","{b}"\n'
                                                         for i, (a, b) in enumerate(zip(texts, pairs))))
  texts = [t + ", quoted" for t in texts]
  predict.predict_main(classifier, str(path), str(tmp_path / "labels.jsonl"))
  logits = _torch_logits(classifier, texts, pairs)
  assert [r["label"] for r in _read_jsonl(tmp_path / "labels.jsonl")] == [LABELS[i] for i in logits.argmax(1)]
  predict.predict_main(regressor, str(path), str(tmp_path / "scores.jsonl"), batch_size=4)
  scores = [r["score"] for r in _read_jsonl(tmp_path / "scores.jsonl")]
  np.testing.assert_allclose(scores, _torch_logits(regressor, texts, pairs)[:, 0], atol=1e-5, rtol=0)


def test_answer_spans_equal_transformers_over_several_windows(reader, tmp_path):
  import torch
  import transformers
  contexts = [" ".join(_texts(12, seed=3)), "A short context about the model.", " ".join(_texts(3, seed=4))]
  questions = ["What does the model read?", "What is it about?", "Which order?"]
  path = tmp_path / "questions.jsonl"
  path.write_text("".join(json.dumps({"question": q, "context": c}) + "\n" for q, c in zip(questions, contexts)))
  predict.predict_main(reader, str(path), str(tmp_path / "answers.jsonl"), batch_size=2)
  records = _read_jsonl(tmp_path / "answers.jsonl")
  # The reference: transformers' logits on squad.prepare_features' windows, squad.postprocess.
  predictor = predict.Predictor(reader)
  examples = [squad.Example(str(i), "", q, c, [], [], False) for i, (q, c) in enumerate(zip(questions, contexts))]
  features = squad.prepare_features(examples, predictor.tokenizer, predictor.max_length, predictor.doc_stride,
                                    max_query_length=predictor.max_query_length)
  assert len(features) > len(examples) + 1  # the long context has several windows
  model = transformers.AutoModelForQuestionAnswering.from_pretrained(reader).eval()
  with torch.no_grad():
    out = model(**{k: torch.tensor(v, dtype=torch.long) for k, v in features.arrays().items()})
  answers = squad.postprocess(examples, features, out.start_logits.numpy(), out.end_logits.numpy())
  assert [r["answer"] for r in records] == [answers[str(i)] for i in range(len(examples))]
  assert any(r["answer"] for r in records)
  for record, context in zip(records, contexts):  # a random model may find no valid span
    if record["answer"]:
      assert context[record["start"]:record["end"]] == record["answer"]
    else:
      assert record["start"] is None and record["end"] is None


def test_bad_rows_are_reported_by_line_and_keep_their_places(classifier, tmp_path, capsys):
  path = tmp_path / "rows.tsv"
  path.write_bytes(b"text\tsource\n"
                   b"A good row.\tweb\n"
                   b"only one field\n"
                   b"Bytes \xff\xfe that are not UTF-8.\tweb\n"
                   b"\n"
                   b"Another good row.\tbook\n")
  predict.predict_main(classifier, str(path), str(tmp_path / "out.jsonl"))
  records = _read_jsonl(tmp_path / "out.jsonl")
  assert [r.get("line") for r in records] == [None, 3, 4, None]
  assert "label" in records[0] and "label" in records[3]
  assert records[1]["error"] == "expected 2 fields as the header, found 1"
  assert records[2]["error"] == "not UTF-8"
  stderr = capsys.readouterr().err
  assert f"{path}:3: expected 2 fields" in stderr and f"{path}:4: not UTF-8" in stderr

  jsonl = tmp_path / "rows.jsonl"
  jsonl.write_text('{"text": "Fine."}\n{"text": \n["a list"]\n{"other": "x"}\n{"text": 3}\n')
  predict.predict_main(classifier, str(jsonl), str(tmp_path / "out2.jsonl"))
  records = _read_jsonl(tmp_path / "out2.jsonl")
  assert "label" in records[0]
  assert [(r["line"], r["error"].split(":")[0]) for r in records[1:]] == [
      (2, "not JSON"), (3, "not a JSON object but list"), (4, "no field 'text'"),
      (5, "field 'text' is int, not a string")]


def test_table_without_a_text_column_is_an_error_and_writes_nothing(classifier, tmp_path):
  path = tmp_path / "rows.tsv"
  path.write_text("review\tstars\nGood.\t5\n")
  out = tmp_path / "out.jsonl"
  out.write_text("kept\n")
  with pytest.raises(inputs.InputError, match=r"rows.tsv: the header has no text column text_a/text_b or"):
    predict.predict_main(classifier, str(path), str(out))
  assert out.read_text() == "kept\n"
  predict.predict_main(classifier, str(path), str(out), text_columns=["review"])
  assert len(_read_jsonl(out)) == 1


def cli(*args, stdin=None):
  return subprocess.run([sys.executable, "-m", "distilbert_jax.main", *args], input=stdin, capture_output=True,
                        text=True, timeout=300, cwd=ROOT)


def test_stdin_input_and_one_line_errors_through_the_command_line(classifier, tmp_path):
  texts = _texts(5, seed=5)
  result = cli("predict", "--model", classifier, "--input", "-", stdin="".join(f"{t}\n" for t in texts))
  assert result.returncode == 0, result.stderr[-2000:]
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r["label"] for r in records] == [LABELS[i] for i in _torch_logits(classifier, texts).argmax(1)]

  (tmp_path / "texts.xlsx").write_text("x")
  for args, message in [(("--model", classifier, "--input", str(tmp_path / "texts.xlsx")), "unknown input type"),
                        (("--model", str(tmp_path / "nothing"), "--input", "-"), "nothing: no such directory")]:
    result = cli("predict", *args, "--out", str(tmp_path / "out.jsonl"), stdin="")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out.jsonl").exists()


# ----------------------------------------------------------------------------- serving one request at a time

def test_batch_one_runs_in_8_token_buckets_compiled_ahead_and_matches_transformers(classifier):
  texts = _texts(12, seed=3)
  predictor = predict.Predictor(classifier, batch_size=1)
  assert predictor.buckets == tuple(range(8, 72, 8))  # every multiple of 8 up to max_position_embeddings
  lengths = predictor.encode([(t,) for t in texts])["lengths"]
  COMPILES.active, COMPILES.count = True, 0
  try:
    predictor.warm_up()
    compiled_ahead = COMPILES.count
    records = [predictor.predict_rows([(t,)])[0] for t in texts]
  finally:
    COMPILES.active = False
  assert compiled_ahead == COMPILES.count == 8  # warm_up compiles every bucket; requests compile nothing
  assert all(n <= predictor.bucket_of(int(n)) < n + 8 for n in lengths)  # at most 7 padding tokens
  assert len({predictor.bucket_of(int(n)) for n in lengths}) >= 4
  assert [predictor.bucket_of(n) for n in (1, 8, 9, 17, 64)] == [8, 8, 16, 24, 64]
  logits = _torch_logits(classifier, texts)
  expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  probabilities = np.array([[r["probabilities"][n] for n in LABELS] for r in records])
  np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)


def test_encode_pads_only_to_the_longest_row(classifier):
  predictor = predict.Predictor(classifier, batch_size=1)
  arrays = predictor.encode([("A short one.",), ("A somewhat longer text than the first one is.", "And a pair.")])
  assert arrays["input_ids"].shape == (2, int(arrays["lengths"].max()))
  assert arrays["attention_mask"].sum(axis=1).tolist() == arrays["lengths"].tolist()
  assert arrays["token_type_ids"][1].max() == 1 and arrays["token_type_ids"][0].max() == 0


def test_the_compiled_forward_has_no_host_round_trip(classifier):
  """The whole forward is one device program: no callback, infeed, outfeed or send/recv to the
  host inside it (the outputs come back once, after it)."""
  predictor = predict.Predictor(classifier, batch_size=1)
  hlo = predictor.compiled_forward(32).as_text().lower()
  assert "dot" in hlo or "fusion" in hlo  # the program text is the forward's
  for op in ("callback", "infeed", "outfeed", "send(", "recv("):
    assert op not in hlo, op


def test_bfloat16_predictor_keeps_bfloat16_params_on_the_device_and_stays_close(classifier):
  import jax.numpy as jnp
  texts = _texts(8, seed=4)
  predictor = predict.Predictor(classifier, batch_size=1, dtype=jnp.bfloat16)
  leaves = jax.tree.leaves(predictor.params)
  assert all(isinstance(x, jax.Array) and x.dtype == jnp.bfloat16 and x.devices() == {jax.devices()[0]}
             for x in leaves)
  assert predictor.model.dtype == jnp.bfloat16
  logits = _torch_logits(classifier, texts)
  expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  probabilities = np.array([[predictor.predict_rows([(t,)])[0]["probabilities"][n] for n in LABELS] for t in texts])
  # bfloat16 keeps 8 bits of mantissa; this model's probabilities (near 1/3 each) moved by 2.3e-5.
  np.testing.assert_allclose(probabilities, expected, atol=2e-4, rtol=0)
  assert not np.allclose(probabilities, expected, atol=1e-6, rtol=0)  # it did compute in bfloat16
