"""distilbert_jax.serving.export: StableHLO (jax.export) and ONNX serving artifacts.

References: the model's own jitted `apply` on the same parameters (the StableHLO call within
1e-6 absolute, float32; the same XLA program, so in practice equal), onnxruntime running the
ONNX file (within 1e-4 absolute, float32). Two batch sizes and two lengths per artifact prove
the symbolic dimensions.
"""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from distilbert_jax import convert, models
from distilbert_jax.serving import export
from conftest import ROOT
from test_models import random_params, tiny_config

SHAPES = [(1, 5), (3, 11)]  # (batch, length): two of each
CASES = [("bert", "sequence_classification"), ("distilbert", "base")]


def saved_model(directory, model_type, head):
  """A tiny random model saved as a Hugging Face directory (with a vocab.txt): (dir, model, params)."""
  config = tiny_config(model_type, id2label=("neg", "neutral", "pos"))
  model = models.get_model(config, head)
  params = random_params(model, config, head, seed=3)
  convert.save_pretrained(model, params, directory)
  (directory / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
  return directory, model, params


def batch(model_type, size, length, seed=0):
  """Random token arrays, int32 [size, length], the first row padded after 3 tokens."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, 90, (size, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[0, 3:] = 0
  ids[0, 3:] = 0
  return [ids, mask] + ([rng.integers(0, 2, (size, length)).astype(np.int32)] if model_type == "bert" else [])


def reference(model, params, head, inputs):
  """The head's outputs from the model's jitted apply, as export's metadata names them."""
  names = export.input_names(model.config)[1:]
  apply = jax.jit(lambda p, ids, *rest: model.apply({"params": p}, ids, **dict(zip(names, rest))),
                  compiler_options=models.compiler_options(head))
  out = apply(params, *inputs)
  return {name: np.asarray(getattr(out, name)) for name in export.HEAD_OUTPUTS[head]
          if getattr(out, name) is not None}


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def source(request, tmp_path_factory):
  model_type, head = request.param
  directory, model, params = saved_model(tmp_path_factory.mktemp("src"), model_type, head)
  return model_type, head, directory, model, params


def test_stablehlo_reloads_and_equals_apply_for_two_batch_sizes_and_lengths(source, tmp_path):
  model_type, head, directory, model, params = source
  out = export.export_main("stablehlo", str(directory), str(tmp_path / "out"))
  info = json.loads((out / "metadata.json").read_text())
  assert info["head"] == head and info["platforms"] == ["cpu", "cuda", "tpu"]
  assert [i["name"] for i in info["inputs"]] == list(export.input_names(model.config))
  assert info["max_length"] == model.config.max_position_embeddings and info["jax_version"] == jax.__version__
  assert (out / "vocab.txt").is_file()
  exported = jax.export.deserialize(bytearray((out / "model.stablehlo").read_bytes()))
  assert str(exported.in_avals[0].shape) == "(batch, length)" and len(exported.in_avals) == len(info["inputs"])
  forward = export.load(out)
  for size, length in SHAPES:
    inputs = batch(model_type, size, length)
    expected = reference(model, params, head, inputs)
    got = forward(*inputs)  # jax.export.deserialize(...).call, jitted
    assert sorted(got) == sorted(expected) == sorted(o["name"] for o in info["outputs"])
    for name in expected:
      np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
  expected_outputs = {"base": {"last_hidden_state": ["batch", "length", 32]},
                      "sequence_classification": {"logits": ["batch", 3]}}[head]
  assert {o["name"]: o["shape"] for o in info["outputs"]} == expected_outputs
  with pytest.raises(export.ExportError, match="longer than max_length"):
    forward(*batch(model_type, 1, model.config.max_position_embeddings + 1))


def test_onnx_runs_in_onnxruntime_and_matches_apply(source, tmp_path):
  pytest.importorskip("jax2onnx")
  ort = pytest.importorskip("onnxruntime")
  model_type, head, directory, model, params = source
  out = export.export_main("onnx", str(directory), str(tmp_path / "out"))
  info = json.loads((out / "metadata.json").read_text())
  session = ort.InferenceSession(str(out / info["file"]), providers=["CPUExecutionProvider"])
  assert [i.name for i in session.get_inputs()] == list(export.input_names(model.config))
  assert [i.shape for i in session.get_inputs()][0] == ["batch", "length"]
  for size, length in SHAPES:
    inputs = batch(model_type, size, length, seed=1)
    expected = reference(model, params, head, inputs)
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, dict(zip(export.input_names(model.config), inputs)))))
    assert sorted(got) == sorted(expected)
    for name in expected:
      np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-4, err_msg=name)


def test_a_non_empty_output_is_refused_unless_overwrite(tmp_path):
  directory, _, _ = saved_model(tmp_path / "src", "distilbert", "base")
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  with pytest.raises(export.ExportError, match="not empty; add --overwrite"):
    export.export_main("stablehlo", str(directory), str(out), platforms=("cpu",))
  assert (out / "keep.txt").read_text() == "mine"
  export.export_main("stablehlo", str(directory), str(out), overwrite=True, platforms=("cpu",))
  assert not (out / "keep.txt").exists() and (out / "model.stablehlo").is_file()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temporary left


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "distilbert_jax.main", "export", *args], capture_output=True,
                        text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": ""})


@pytest.mark.parametrize("args,message", [
    (("--format", "stablehlo", "{tmp}/missing", "{tmp}/out"), "missing: no such model directory"),
    (("--format", "tflite", "{tmp}", "{tmp}/out"), "--format must be one of stablehlo, onnx, got 'tflite'"),
])
def test_a_bad_model_dir_or_format_prints_one_line_and_exits_2(tmp_path, args, message):
  result = run_cli(*(a.format(tmp=tmp_path) for a in args))
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
  assert not (tmp_path / "out").exists()
