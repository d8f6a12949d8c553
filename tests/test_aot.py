"""Ahead-of-time compiles for TPU and GPU targets on this CPU (libtpu's and the CUDA plugin's
topologies): the step `train.run` runs, its memory, FLOPs and collectives, the platform's
choices, and the command's one-line answers."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from conftest import ROOT
from distilbert_jax import errors, models, train
from distilbert_jax.hardware import aot, hlo_stats, targets
from test_main import assert_one_line_error, cli

pytest.importorskip("libtpu", reason="the tpu extra (libtpu) is not installed")
TINY = str(ROOT / "configs" / "tiny.py")
GLUE = str(ROOT / "configs" / "glue.py")


def _overridden(config, overrides: dict):
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def tiny_distill(**overrides):
  from configs import tiny
  return _overridden(tiny.get_config(), overrides)


@pytest.fixture(scope="module")
def bert_config_only_dir(tmp_path_factory):
  """A model directory that holds a config.json and nothing else (no weights, no tokenizer)."""
  directory = tmp_path_factory.mktemp("config_only")
  config = models.BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=128)
  fields = {k: v for k, v in config.to_hf_dict().items() if k not in ("id2label", "label2id")}
  (directory / "config.json").write_text(json.dumps(fields))
  return str(directory)


def tiny_finetune(model_dir, **overrides):
  from configs import glue
  config = glue.get_config()
  config.model.path = model_dir
  config.train.batch_size = 8
  return _overridden(config, overrides)


@pytest.fixture(scope="module")
def reports(bert_config_only_dir):
  """One compile per (job, target), shared by the tests that read its report."""
  cache = {}

  def get(job, target_name):
    if (job, target_name) not in cache:
      config = tiny_distill(**{"student.dtype": "auto", "teacher.dtype": "auto"}) if job == "distill" \
          else tiny_finetune(bert_config_only_dir)
      cache[job, target_name] = aot.compile_step(config, targets.parse_target(target_name))
    return cache[job, target_name]
  return get


@pytest.mark.parametrize("job", ["distill", "finetune"])
@pytest.mark.parametrize("target", ["v5e-4", "v4-8"])
def test_tiny_jobs_compile_for_tpu_with_positive_memory_and_flops_near_the_model_count(reports, job, target):
  report = reports(job, target)
  assert report["devices"] == 4 and report["platform"] == "tpu"
  assert report["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
  memory = report["per_device_bytes"]
  assert min(memory["params"], memory["optimizer"], memory["total"]) > 0 and memory["temp"] >= 0
  assert (memory["frozen"] > 0) == (job == "distill")
  assert memory["total"] >= memory["params"] + memory["optimizer"] + memory["frozen"]
  assert report["fits"] and report["hbm_bytes"] == targets.CHIPS[target.split("-")[0]].hbm_bytes
  # The compiled program's dots and convolutions, loop bodies as often as they run, against
  # flops.py's count (3 student forwards + 1 teacher forward): the rest is what the model
  # count leaves out (attention softmax is no product; the tied head's bias gradient is).
  assert report["flops_per_step"] == pytest.approx(report["flops_per_step_model"], rel=0.10)
  assert report["unknown_trip_counts"] == 0
  assert 0 < report["step_time_lower_bound_s"] and 0 < report["mfu_upper_bound"] <= 1
  json.dumps(report)  # the --out file


def test_a_bfloat16_cpu_config_compiled_for_tpu_takes_tpu_choices(reports):
  report = reports("distill", "v5e-4")
  assert report["student_dtype"] == "bfloat16" and report["teacher_dtype"] == "bfloat16"
  assert report["compiler_options"] == {}
  # The same job compiled for this CPU gets XLA:CPU options (a bfloat16 student trains only
  # with YNNPACK fusing its products); none of them may reach a TPU compile.
  job = __import__("distilbert_jax.jobs.distill", fromlist=["x"]).make_abstract_job(
      tiny_distill(**{"student.dtype": "bfloat16"}), "cpu")
  assert any(k.startswith("xla_cpu") for k in train.step_compiler_options(job, "cpu"))
  assert models.resolve_dtype("auto", "tpu") == jnp.bfloat16
  assert models.resolve_attention_impl("auto", "tpu") == "dot_product"
  assert models.resolve_attention_impl("auto", "cpu") == "xla"


def test_fsdp_gathers_parameters_and_a_data_only_mesh_only_all_reduces():
  # Without masking (its sort of the whole batch communicates too) and with a base-head
  # student, what remains is the gradients' reduction.
  plain = dict(**{"mask.mlm_probability": 0.0, "loss.alpha_mlm": 0.0, "loss.alpha_ce": 0.0})
  target = targets.parse_target("v5e-4")
  data_only = aot.compile_step(tiny_distill(**plain), target)
  assert set(data_only["collectives"]) == {"all-reduce"}, data_only["collectives"]
  fsdp = aot.compile_step(tiny_distill(**plain, **{"mesh.data": 2, "mesh.fsdp": 2}), target)
  assert {"all-gather", "reduce-scatter"} & set(fsdp["collectives"]), fsdp["collectives"]
  assert fsdp["per_device_bytes"]["optimizer"] < data_only["per_device_bytes"]["optimizer"]


def test_task_distillation_that_learns_w_h_compiles_for_tpu_on_an_fsdp_mesh(bert_config_only_dir, tmp_path):
  """A 32-wide student under a 48-wide teacher: the projection (32 x 48 + 48 float32) is
  trained beside the student, whole on every device, with its Adam moments."""
  teacher = tmp_path / "teacher"
  teacher.mkdir()
  fields = json.loads((Path(bert_config_only_dir) / "config.json").read_text())
  (teacher / "config.json").write_text(json.dumps(dict(fields, hidden_size=48)))
  target = targets.parse_target("v5e-4")
  overrides = {"teacher.path": str(teacher), "loss.alpha_kd": 1.0, "mesh.data": 2, "mesh.fsdp": 2}
  plain = aot.compile_step(tiny_finetune(bert_config_only_dir, **overrides), target)
  projected = aot.compile_step(tiny_finetune(bert_config_only_dir, **overrides, **{"loss.alpha_hidden": 1.0}), target)
  assert projected["fits"] and projected["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
  extra = (32 * 48 + 48) * 4  # float32 bytes of W_h, whole on each device; twice that of moments
  assert projected["per_device_bytes"]["params"] - plain["per_device_bytes"]["params"] == extra
  assert projected["per_device_bytes"]["optimizer"] - plain["per_device_bytes"]["optimizer"] == 2 * extra


def test_hlo_stats_count_loop_bodies_as_often_as_they_run_and_ring_collective_bytes():
  devices = targets.parse_target("v5e-4").devices()
  mesh = Mesh(np.asarray(devices), ("d",))
  layers, rows, width = 6, 16, 128

  def stacked_products(x, w):  # x [rows, width] per device, w [layers, width, width]
    return jax.lax.scan(lambda c, wi: (c @ wi, None), x, w)[0]

  def step(x, w):
    return jax.lax.psum(jnp.sum(stacked_products(x, w), axis=0), "d")  # one all-reduce of [width]

  mapped = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P("d"), P()), out_specs=P()))
  x = jax.ShapeDtypeStruct((4 * rows, width), jnp.float32, sharding=NamedSharding(mesh, P("d")))
  w = jax.ShapeDtypeStruct((layers, width, width), jnp.float32, sharding=NamedSharding(mesh, P()))
  compiled = mapped.lower(x, w).compile()
  stats = hlo_stats.analyse(compiled.as_text(), num_partitions=4)
  assert stats.flops == layers * 2 * rows * width * width  # per device
  assert stats.unknown_trip_counts == 0
  assert stats.collectives == {"all-reduce": 1}
  assert stats.collective_bytes == 2 * width * 4 * 3 / 4  # 2 S (n - 1) / n
  assert stats.bytes_accessed >= layers * width * width * 4  # every layer's weights are read
  xla_flops = (compiled.cost_analysis() or {}).get("flops")
  if xla_flops is not None:  # why this module exists: XLA counts the scan's body once
    assert xla_flops < stats.flops


def test_target_names_give_the_slices_cloud_tpu_and_gpu_machines_have():
  expected = {"v4-8": ("2x2x1", 4), "v4-32": ("2x2x4", 16), "v5p-128": ("4x4x4", 64), "v5e-256": ("16x16", 256),
              "v6e-64": ("8x8", 64), "v5e-256x2": ("16x16", 512), "h100x8": ("1x1x8", 8),
              "h100x8x4": ("1x4x8", 32)}
  for name, (topology, devices) in expected.items():
    target = targets.parse_target(name)
    assert (target.topology, target.num_devices) == (topology, devices), name
  assert len(targets.parse_target("v5e-256x2").devices()) == 512
  for bad in ("v4-6", "v5e-3", "tpu", "h100x16"):
    with pytest.raises(errors.ConfigError):
      targets.parse_target(bad)


def test_device_kinds_name_the_chips_of_the_table():
  chip = lambda kind: targets.chip_of_device_kind(kind)
  assert chip("TPU v5 lite") is targets.CHIPS["v5e"] and chip("TPU v5") is targets.CHIPS["v5p"]
  assert chip("TPU v6 lite") is targets.CHIPS["v6e"] and chip("TPU v4") is targets.CHIPS["v4"]
  assert chip("NVIDIA H100 80GB HBM3") is targets.CHIPS["h100"] and chip("cpu") is None
  devices = targets.parse_target("v5p-8").devices()
  assert chip(devices[0].device_kind) is targets.CHIPS["v5p"]


def test_without_libtpu_the_compile_names_the_package_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "libtpu", None)  # import libtpu -> ImportError
  with pytest.raises(errors.ConfigError, match=r"needs libtpu: pip install 'distilbert_jax\[tpu\]'"):
    targets.parse_target("v5e-4").devices()


@pytest.mark.slow
def test_the_command_prints_its_report_and_writes_json_from_another_directory(tmp_path, bert_config_only_dir):
  result = cli("compile", "--config", GLUE, "--target", "v4-8", f"--config.model.path={bert_config_only_dir}",
               "--config.train.batch_size=8", "--out", "report.json", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "memory per device" in result.stdout and "roofline" in result.stdout
  report = json.loads((tmp_path / "report.json").read_text())
  for key in ("target", "devices", "mesh", "global_batch", "per_device_batch", "grad_accum_steps", "length",
              "per_device_bytes", "hbm_bytes", "fits", "flops_per_step", "flops_per_step_model", "collectives",
              "collective_bytes", "step_time_lower_bound_s", "mfu_upper_bound", "compile_seconds"):
    assert key in report, key
  assert set(report["per_device_bytes"]) == {"params", "optimizer", "frozen", "temp", "total"}
  assert "Traceback" not in result.stderr and "TPU_" not in result.stderr


@pytest.mark.slow
def test_a_batch_that_cannot_fit_is_one_line_and_exit_status_2(tmp_path):
  result = cli("compile", "--config", TINY, "--target", "v5e-1", "--config.train.batch_size=32768",
               "--config.train.grad_accum_steps=1", "--config.data.bucket_lengths=(64,)", cwd=tmp_path)
  assert_one_line_error(result, "does not fit on v5e-1: needs", "GiB per device of")


def test_fit_batch_finds_the_largest_micro_batch_and_its_accumulation(tmp_path, monkeypatch, capsys):
  # A v5e with 300 MiB: the bisection's compiles stay small; the fit is the report's own check.
  from distilbert_jax import main
  v5e = targets.parse_target("v5e-1")
  small = dataclasses.replace(v5e, chip=dataclasses.replace(v5e.chip, hbm_bytes=300 * 2 ** 20))
  monkeypatch.setattr(targets, "parse_target", lambda name: small)
  out = tmp_path / "fit.json"
  assert main.main(["compile", "--config", TINY, "--target", "v5e-1", "--fit-batch", "--config.train.batch_size=64",
                    "--config.train.grad_accum_steps=1", "--out", str(out)]) == 0
  report = json.loads(out.read_text())
  micro, accum = report["per_device_micro_batch"], report["grad_accum_steps"]
  assert micro * accum == 64 and 1 < accum < 64 and report["fits"]
  assert report["per_device_bytes"]["total"] <= small.chip.hbm_bytes
  tried = [(t["per_device_micro_batch"], t["fits"]) for t in report["fit_batch_tried"]]
  assert all(fits == (m <= micro) for m, fits in tried), tried
  assert any(not fits for _, fits in tried)  # a larger micro-batch was tried and did not fit
  assert f"--config.train.grad_accum_steps={accum}" in capsys.readouterr().out


def _cuda_plugin_env():
  """The environment of a process that can load the CUDA plugin, or None: installed with the
  cuda extra, or in the directory CUDA_PLUGIN_DIR names (make test installs it there, apart,
  since the plugin announces itself on every jax import of a machine without CUDA)."""
  env = dict(os.environ)
  directory = os.path.abspath(os.environ.get("CUDA_PLUGIN_DIR", ""))
  if os.environ.get("CUDA_PLUGIN_DIR") and os.path.isdir(os.path.join(directory, "jax_plugins", "xla_cuda12")):
    env["PYTHONPATH"] = os.pathsep.join(p for p in (directory, env.get("PYTHONPATH")) if p)
    return env
  return env if importlib.util.find_spec("jax_plugins.xla_cuda12") else None


@pytest.mark.slow
def test_the_tiny_job_compiles_for_8_h100_through_the_cuda_plugin(tmp_path):
  env = _cuda_plugin_env()
  if env is None:
    pytest.skip("the CUDA plugin (the cuda extra) is not installed")
  result = subprocess.run([sys.executable, "-m", "distilbert_jax.main", "compile", "--config", TINY, "--target",
                           "h100x8", "--config.mesh.fsdp=2", "--out", "h100.json"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "h100.json").read_text())
  assert report["platform"] == "gpu" and report["devices"] == 8 and report["chip"] == targets.CHIPS["h100"].name
  assert report["mesh"] == {"data": 4, "fsdp": 2, "tensor": 1}
  assert report["per_device_bytes"]["total"] > 0 and report["fits"]
  assert report["flops_per_step"] == pytest.approx(report["flops_per_step_model"], rel=0.10)


@pytest.mark.slow
def test_cpu_commands_do_not_initialise_an_installed_tpu_runtime():
  if main_has_accelerator():
    pytest.skip("this machine has an accelerator")
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  code = ("from distilbert_jax import main; main._choose_platforms('distill'); import jax; "
          "print(jax.devices()[0].platform)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "cpu"
  assert "TPU" not in result.stderr and "libtpu" not in result.stderr, result.stderr


def main_has_accelerator() -> bool:
  from distilbert_jax import main
  return main._has_accelerator()
