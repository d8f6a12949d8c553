"""scripts/glue_corpus.py: the in-domain corpus holds each task's training texts once, and no
text of a dev set or of the rows held out for scoring SST-2 and STS-B."""
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import glue_corpus  # noqa: E402
from distilbert_jax.tasks import glue  # noqa: E402
from distilbert_jax.tasks.task_data import holdout  # noqa: E402


def write(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_the_corpus_keeps_training_texts_once_and_leaves_out_every_scored_text(tmp_path):
  glue_dir = tmp_path / "glue"
  write(glue_dir / "CoLA/train.tsv", ["gj04\t1\t\tOur friends won't buy this.", "gj04\t0\t*\tThe book read John.",
                                      "gj04\t1\t\tBill left.", "gj04\t1\t\tOur friends won't buy this."])
  write(glue_dir / "CoLA/dev.tsv", ["gj04\t1\t\tBill left."])
  write(glue_dir / "RTE/train.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA cat sat.\tA cat is sitting.\tentailment"])
  write(glue_dir / "RTE/dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tDogs bark.\tA cat sat.\tentailment"])
  sts = [f"sentence {i} a.\tsentence {i} b." for i in range(40)]
  write(glue_dir / "STS-B/train.tsv", ["sentence1\tsentence2\tscore"] + [f"{p}\t{i % 5}" for i, p in enumerate(sts)])
  _, held = holdout(glue.read_glue(glue_dir, glue.get_task("stsb"), "train"), 0.1, 0)
  assert len(held) == 4
  texts = glue_corpus.training_sentences(str(glue_dir))
  assert texts[:2] == ["Our friends won't buy this.", "The book read John."]  # once each; "Bill left." is CoLA dev
  assert "Bill left." not in texts and "A cat sat." not in texts  # RTE's dev has it too
  assert "A cat is sitting." in texts
  assert not set(held.text_a + held.text_b) & set(texts)
  assert len(texts) == 3 + 2 * 36
  out = tmp_path / "corpus.txt"
  glue_corpus.main(["--glue", str(glue_dir), "--out", str(out)])
  assert out.read_text(encoding="utf-8").splitlines() == texts
