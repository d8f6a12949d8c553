"""The sentence-transformers layout: exports keep it, and Encoder pools as sentence-transformers does.

The reference is sentence-transformers itself (SentenceTransformer(dir).encode) on the real
all-MiniLM-L6-v2 and on tiny random BERTs with pooling configs written here. Tolerance: 1e-5
absolute on float32 embeddings (the largest difference measured is 7e-7).
"""
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from distilbert_jax import convert
from distilbert_jax.tasks import embeddings

SENTENCES = ["A man is playing a guitar.", "The cat sleeps on the sofa.", "Stocks fell sharply on Monday.",
             "hello", "Children are playing football in the park while their parents watch from the benches."]
TOLERANCE = 1e-5
ST_FILES = ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def _reference(model_dir):
  """sentence-transformers' embeddings of SENTENCES, [n, d] float32."""
  from sentence_transformers import SentenceTransformer
  return SentenceTransformer(str(model_dir), device="cpu").encode(SENTENCES, convert_to_numpy=True)


def _ours(model_dir):
  return embeddings.Encoder(str(model_dir)).embed(SENTENCES, batch_size=4)  # two batches, padding rows


def _with_pooling(tiny_bert, tmp_path, pooling: dict, normalize: bool):
  """A copy of the tiny BERT directory with modules.json and 1_Pooling/config.json = pooling."""
  model_dir = tmp_path / "model"
  shutil.copytree(tiny_bert, model_dir)
  modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
  if normalize:
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
  (model_dir / "modules.json").write_text(json.dumps(modules))
  (model_dir / "1_Pooling").mkdir()
  (model_dir / "1_Pooling/config.json").write_text(json.dumps(pooling))
  (model_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
  return model_dir


@pytest.fixture(autouse=True)
def _quiet_sentence_transformers():
  logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


def test_converted_minilm_keeps_its_layout_and_encodes_as_sentence_transformers(minilm, tmp_path):
  model, params = convert.load_pretrained(minilm, head="base")
  export = tmp_path / "export"
  convert.save_pretrained(model, params, export)  # the files come from the directory it was loaded from
  for name in ST_FILES:
    assert (export / name).is_file(), name
  assert json.loads((export / "1_Pooling/config.json").read_text()) == \
      json.loads((Path(minilm) / "1_Pooling/config.json").read_text())
  assert json.loads((export / "sentence_bert_config.json").read_text())["max_seq_length"] == 256
  encoder = embeddings.Encoder(str(export))
  assert encoder.pooling == convert.SentencePooling(("mean",), normalize=True, dimension=384, max_seq_length=256)
  ours = encoder.embed(SENTENCES, batch_size=4)
  np.testing.assert_allclose(ours, _reference(export), atol=TOLERANCE)
  np.testing.assert_allclose(ours, _reference(minilm), atol=TOLERANCE)
  np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-6)


def test_flax_round_trip_keeps_the_layout(minilm, tmp_path):
  convert.convert_main("flax", minilm, str(tmp_path / "flax"))
  convert.convert_main("pytorch", str(tmp_path / "flax"), str(tmp_path / "back"))
  read = lambda d, name: json.loads((Path(d) / name).read_text())
  for name in ST_FILES:
    assert read(tmp_path / "flax", name) == read(minilm, name), name
    assert read(tmp_path / "back", name) == read(minilm, name), name
  assert convert.read_sentence_pooling(tmp_path / "flax").normalize


def test_distill_export_of_a_minilm_student_encodes_as_sentence_transformers(minilm, tmp_path):
  from configs import minilm_l3
  from distilbert_jax.data import masking
  from distilbert_jax.jobs import distill
  config = minilm_l3.get_config()
  pair = distill.build_models(config)
  data = distill.Data(None, 1, masking.uniform_token_probs(pair.student_config.vocab_size, ()), 0, minilm)
  job = distill.job_from_parts(config, pair, data)
  export = tmp_path / "export"
  job.export(pair.student_params, export)
  for name in ST_FILES:
    assert (export / name).is_file(), name
  assert json.loads((export / "config.json").read_text())["num_hidden_layers"] == 3
  np.testing.assert_allclose(_ours(export), _reference(export), atol=TOLERANCE)


def test_a_narrower_student_gets_its_own_pooling_dimension(minilm, tiny_bert, tmp_path):
  model, params = convert.load_pretrained(tiny_bert, head="base")
  export = tmp_path / "export"
  convert.save_pretrained(model, params, export, sentence_transformers_source=minilm)
  pooling = json.loads((export / "1_Pooling/config.json").read_text())
  assert pooling["word_embedding_dimension"] == 32 and pooling["pooling_mode_mean_tokens"]
  np.testing.assert_allclose(_ours(export), _reference(export), atol=TOLERANCE)


@pytest.mark.parametrize("pooling, normalize, modes", [
    ({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, True,
     ("cls",)),
    ({"embedding_dimension": 32, "pooling_mode": "max"}, False, ("max",)),
    ({"embedding_dimension": 32, "pooling_mode": ["mean", "cls"]}, True, ("mean", "cls")),
    ({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, False,
     ("cls", "mean")),
])
def test_pooling_configs_encode_as_sentence_transformers(tiny_bert, tmp_path, pooling, normalize, modes):
  model_dir = _with_pooling(tiny_bert, tmp_path, pooling, normalize)
  encoder = embeddings.Encoder(str(model_dir))
  assert encoder.pooling.modes == modes and encoder.pooling.normalize == normalize
  ours = encoder.embed(SENTENCES, batch_size=4)
  assert ours.shape == (len(SENTENCES), 32 * len(modes))
  np.testing.assert_allclose(ours, _reference(model_dir), atol=TOLERANCE)


def test_cls_pooling_is_the_normalised_first_hidden_state(tiny_bert, tmp_path):
  import torch
  import transformers
  model_dir = _with_pooling(tiny_bert, tmp_path, {"pooling_mode_cls_token": True}, normalize=True)
  tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_bert)
  model = transformers.AutoModel.from_pretrained(tiny_bert).eval()
  with torch.no_grad():
    first = model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).last_hidden_state[:, 0].numpy()
  expected = first / np.linalg.norm(first, axis=-1, keepdims=True)
  np.testing.assert_allclose(_ours(model_dir), expected, atol=TOLERANCE)


def test_without_modules_json_the_pooling_is_the_unnormalised_mean(tiny_bert):
  encoder = embeddings.Encoder(tiny_bert)
  assert encoder.pooling == convert.SentencePooling() and encoder.max_length == 64
  ours = encoder.embed(SENTENCES, batch_size=4)
  assert not np.allclose(np.linalg.norm(ours, axis=-1), 1.0)
  np.testing.assert_allclose(ours, _reference(tiny_bert), atol=TOLERANCE)


def test_no_source_layout_means_no_sentence_transformers_files(tiny_bert, tmp_path):
  model, params = convert.load_pretrained(tiny_bert, head="base")
  convert.save_pretrained(model, params, tmp_path / "export")
  assert not (tmp_path / "export" / "modules.json").exists()


@pytest.mark.parametrize("write, message", [
    (lambda d: (d / "1_Pooling/config.json").write_text('{"pooling_mode": "weightedmean"}'),
     "pooling mode(s) weightedmean not supported"),
    (lambda d: (d / "1_Pooling/config.json").write_text("{not json"), "unreadable JSON"),
    (lambda d: (d / "1_Pooling/config.json").unlink(), "missing pooling config"),
    (lambda d: (d / "modules.json").write_text(json.dumps(
        json.loads((d / "modules.json").read_text()) + [{"path": "3_Dense", "type": "sentence_transformers.models.Dense"}])),
     "module(s) Dense not supported"),
    (lambda d: (d / "modules.json").write_text('{"type": "Pooling"}'), "expected a list of modules"),
    (lambda d: (d / "modules.json").write_text('[{"type": "Pooling", "path": "../elsewhere"}]'),
     "leaves the model directory"),
])
def test_bad_layouts_are_one_line_errors_naming_the_file(tiny_bert, tmp_path, write, message):
  model_dir = _with_pooling(tiny_bert, tmp_path, {"pooling_mode": "mean"}, normalize=True)
  write(model_dir)
  with pytest.raises(convert.ConversionError, match=re.escape(message)) as error:
    convert.read_sentence_pooling(model_dir)
  assert str(model_dir) in str(error.value) and "\n" not in str(error.value)


def test_a_pooling_dimension_other_than_the_hidden_size_is_an_error(tiny_bert, tmp_path):
  model_dir = _with_pooling(tiny_bert, tmp_path, {"word_embedding_dimension": 384}, normalize=False)
  with pytest.raises(embeddings.EvaluationError, match="dimension 384 but the model's hidden size is 32"):
    embeddings.Encoder(str(model_dir))


def test_a_bad_source_layout_leaves_no_export(tiny_bert, tmp_path):
  source = _with_pooling(tiny_bert, tmp_path, {"pooling_mode": "mean"}, normalize=False)
  (source / "modules.json").write_text("[oops")
  model, params = convert.load_pretrained(tiny_bert, head="base")
  with pytest.raises(convert.ConversionError, match="modules.json: unreadable JSON"):
    convert.save_pretrained(model, params, tmp_path / "export", sentence_transformers_source=source)
  assert not (tmp_path / "export").exists()
  assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left either
