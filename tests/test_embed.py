"""`distilbert-jax embed` on the real all-MiniLM-L6-v2: equal to transformers' mean pooling and
to Encoder.embed, in input order, with bad rows in their places."""
import json
from pathlib import Path

import numpy as np
import pytest

from distilbert_jax import errors
from distilbert_jax.serving import embed
from distilbert_jax.tasks import embeddings
from test_embeddings import SENTENCES, _torch_mean_pooled

# Longer and shorter sentences mixed, so batches have several lengths.
TEXTS = SENTENCES + [" ".join(SENTENCES[:4]), "Yes.", " ".join(SENTENCES[3:9]) + " The end."]


def test_npy_equals_transformers_mean_pooling_and_encoder_embed(minilm, tmp_path):
  path = tmp_path / "sentences.txt"
  path.write_text("".join(t + "\n" for t in TEXTS))
  embed.embed_main(minilm, str(path), str(tmp_path / "embeddings.npy"), batch_size=4)
  ours = np.load(tmp_path / "embeddings.npy")
  assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 384)
  np.testing.assert_allclose(ours, _torch_mean_pooled(TEXTS), atol=1e-5, rtol=0)
  np.testing.assert_array_equal(ours, embeddings.Encoder(minilm).embed(TEXTS, batch_size=4))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.npy", "sentences.txt"]  # no temporary left


def test_json_lines_from_a_table_with_bad_rows_in_their_places(minilm, tmp_path, capsys):
  path = tmp_path / "sentences.tsv"
  path.write_bytes(b"id\tsentence\n0\tA man is playing a guitar.\n1\n2\tNot \xff UTF-8.\n3\tThe cat sleeps on the sofa.\n")
  embed.embed_main(minilm, str(path), str(tmp_path / "embeddings.jsonl"))
  records = [json.loads(line) for line in (tmp_path / "embeddings.jsonl").read_text().splitlines()]
  assert [r.get("line") for r in records] == [None, 3, 4, None]
  vectors = np.array([records[0]["embedding"], records[3]["embedding"]], np.float32)
  expected = embeddings.Encoder(minilm).embed(["A man is playing a guitar.", "The cat sleeps on the sofa."])
  np.testing.assert_array_equal(vectors, expected)
  assert f"{path}:3: expected 2 fields" in capsys.readouterr().err
  # In .npy the bad rows are NaN rows.
  embed.embed_main(minilm, str(path), str(tmp_path / "embeddings.npy"))
  array = np.load(tmp_path / "embeddings.npy")
  assert np.isnan(array[1:3]).all() and np.array_equal(array[[0, 3]], expected)


def test_unknown_output_type_is_an_error_before_the_model_loads(tmp_path):
  path = tmp_path / "sentences.txt"
  path.write_text("One.\n")
  with pytest.raises(errors.ConfigError, match="unknown output type '.csv'"):
    embed.embed_main(str(tmp_path / "no-model"), str(path), str(tmp_path / "out.csv"))
  with pytest.raises(errors.Error, match="no-model: no such directory"):
    embed.embed_main(str(tmp_path / "no-model"), str(path), str(tmp_path / "out.npy"))
  assert not Path(tmp_path / "out.npy").exists()
