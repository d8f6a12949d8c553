"""The embedded corpus: real prose from the standard library, deterministic, atomic files."""
from distilbert_jax.data import corpus


def test_embedded_corpus_is_deterministic_prose_with_a_disjoint_heldout_split(tmp_path):
  a = corpus.write_embedded_corpus(tmp_path / "a")
  b = corpus.write_embedded_corpus(tmp_path / "b")
  assert a["fingerprint"] == b["fingerprint"]
  assert a["num_train"] > 3000 and a["num_heldout"] > 100
  train = open(a["train"]).read().splitlines()
  heldout = open(a["heldout"]).read().splitlines()
  assert not set(train) & set(heldout)
  for sentence in train[:200]:
    assert sentence[0].isupper() and sentence[-1] in ".!?" and 8 <= len(sentence.split()) <= 48
  assert not list(tmp_path.glob("*/*.tmp"))
