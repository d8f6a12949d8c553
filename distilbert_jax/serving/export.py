"""`distilbert-jax export`: a model directory as a serving artifact, StableHLO or ONNX, and the
loader of the StableHLO one.

    export_main("stablehlo", "runs/sst2/export", "serving/sst2")   # or "onnx"
    forward = export.load("serving/sst2")                         # StableHLO artifacts
    logits = forward(input_ids, attention_mask)["logits"]         # int32 [batch, length] NumPy in

The artifact is a function of the token arrays alone, int32 [batch, length] (BERT: input_ids,
attention_mask, token_type_ids; DistilBERT: input_ids, attention_mask; multiple choice:
[batch, choices, length]), with the batch and sequence dimensions symbolic, so that one file
serves every shape up to the position table (`max_length` in metadata.json: longer inputs are
refused when the StableHLO function is called). It returns the outputs of the model's head,
float32: base -> last_hidden_state (and pooler_output for BERT), sequence or token
classification and masked LM -> logits, question answering -> start_logits and end_logits,
pretraining -> logits and seq_relationship_logits.

The parameters are baked in as constants: a server then loads one file and calls it with tokens,
with no checkpoint format to read beside it, and XLA sees the weights when it compiles. The
StableHLO is lowered for CPU, CUDA and TPU at once (`platforms`), so one artifact serves on any
device. OUT holds the artifact (model.stablehlo or model.onnx), metadata.json (inputs, outputs,
dtypes, max_length, versions) and the source's tokenizer files; it is written atomically.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax import atomic, errors, records, storage

FORMATS = ("stablehlo", "onnx")
ARTIFACT_FILES = {"stablehlo": "model.stablehlo", "onnx": "model.onnx"}
METADATA_FILE = "metadata.json"
PLATFORMS = ("cpu", "cuda", "tpu")
# The outputs of each head, in this order; the base model's pooler_output only where it has one.
HEAD_OUTPUTS = {
    "base": ("last_hidden_state", "pooler_output"),
    "masked_lm": ("logits",),
    "pretraining": ("logits", "seq_relationship_logits"),
    "sequence_classification": ("logits",),
    "multiple_choice": ("logits",),
    "token_classification": ("logits",),
    "question_answering": ("start_logits", "end_logits"),
}


class ExportError(errors.Error, ValueError):
  """An export that cannot be made or an artifact that cannot be loaded."""


def input_names(config) -> tuple[str, ...]:
  """The artifact's inputs, in call order: BERT also takes token_type_ids."""
  return ("input_ids", "attention_mask") + (("token_type_ids",) if config.model_type == "bert" else ())


def input_axes(head: str) -> tuple[str, ...]:
  """The names of the inputs' dimensions (symbolic in the artifact)."""
  return ("batch", "choices", "length") if head == "multiple_choice" else ("batch", "length")


def forward_function(model, params, head: str, *, explicit_positions: bool = False) -> Callable:
  """f(*inputs) -> {output name: float32 array}: the model's forward in inference mode, with
  `params` closed over (baked in as constants when traced). explicit_positions: the position ids
  are a cumulative sum rather than the model's arange, which equals it and which converters that
  cannot broadcast a dynamic arange (jax2onnx) can trace."""
  names = input_names(model.config)

  def forward(*inputs):
    kwargs = dict(zip(names[1:], inputs[1:]))
    if explicit_positions:
      kwargs["position_ids"] = jnp.cumsum(jnp.ones_like(inputs[0]), axis=-1) - 1
    out = model.apply({"params": params}, inputs[0], deterministic=True, **kwargs)
    return {name: getattr(out, name).astype(jnp.float32) for name in HEAD_OUTPUTS[head]
            if getattr(out, name) is not None}
  return forward


def symbolic_inputs(config, head: str) -> list[jax.ShapeDtypeStruct]:
  """The inputs' shapes, int32 with symbolic dimensions (input_axes), the length constrained to
  the position table."""
  shape = jax.export.symbolic_shape(", ".join(input_axes(head)),
                                    constraints=(f"length <= {config.max_position_embeddings}",))
  return [jax.ShapeDtypeStruct(shape, jnp.int32)] * len(input_names(config))


def output_specs(forward: Callable, config, head: str) -> list[dict]:
  """[{name, dtype, shape}] of forward's outputs; symbolic dimensions by name."""
  outputs = jax.eval_shape(forward, *symbolic_inputs(config, head))
  return [{"name": name, "dtype": str(out.dtype), "shape": [d if isinstance(d, int) else str(d) for d in out.shape]}
          for name, out in outputs.items()]


def export_stablehlo(model, params, head: str, platforms: Sequence[str] = PLATFORMS) -> jax.export.Exported:
  """The model's forward exported by jax.export, for `platforms`, with symbolic batch and length
  (and choices) dimensions; the length constrained to the position table."""
  specs = symbolic_inputs(model.config, head)
  forward = jax.jit(forward_function(model, params, head))
  try:
    return jax.export.export(forward, platforms=tuple(platforms))(*specs)
  except ValueError as e:  # e.g. an unknown platform name
    raise ExportError(f"export: cannot lower for platforms {','.join(platforms)}: {str(e).splitlines()[0]}") from e


def metadata(model, head: str, fmt: str, forward: Callable, **extra) -> dict:
  """What a server needs to know of the artifact, for metadata.json."""
  config = model.config
  axes = input_axes(head)
  return {
      "format": fmt, "file": ARTIFACT_FILES[fmt], "model_type": config.model_type, "head": head,
      "inputs": [{"name": name, "dtype": "int32", "shape": list(axes)} for name in input_names(config)],
      "outputs": output_specs(forward, config, head),
      "max_length": config.max_position_embeddings,
      "labels": list(config.id2label) if head in ("sequence_classification", "token_classification")
      and config.id2label else None,
      "jax_version": jax.__version__, **extra,
  }


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
  """An existing output that is not an empty directory needs --overwrite (as `convert`)."""
  empty_dir = out_dir.is_dir() and not any(out_dir.iterdir())
  if out_dir.exists() and not (overwrite or empty_dir):
    raise ExportError(f"{out_dir}: output directory exists and is not empty; add --overwrite to replace it")


def export_main(fmt: str, src: str, dst: str, head: Optional[str] = None, *, overwrite: bool = False,
                platforms: Sequence[str] = PLATFORMS) -> Path:
  """`distilbert-jax export`: writes dst (atomically) from the model directory src (Hugging Face
  or ours); head defaults to the directory's own. Returns dst."""
  from distilbert_jax import convert
  if fmt not in FORMATS:
    raise ExportError(f"export: --format must be one of {', '.join(FORMATS)}, got {fmt!r}")
  out_dir = storage.path(dst)  # gs:// too: atomic.directory publishes it there
  hf_config = _read_hf_config(Path(src))
  check_output_dir(out_dir, overwrite)
  if head is None:
    head = hf_config.get(convert.FLAX_HEAD_KEY) or convert.head_from_architectures(hf_config, f"{src}/config.json")
  # The plain inference path: unrolled layers, the explicit softmax, which every platform lowers.
  model, params = convert.load_pretrained(src, head=head, scan_layers=False, remat_policy="none",
                                          attention_impl="xla")
  forward = forward_function(model, params, head)
  if fmt == "stablehlo":
    exported = export_stablehlo(model, params, head, platforms)
    artifact = exported.serialize()
    info = metadata(model, head, fmt, forward, platforms=list(exported.platforms),
                    calling_convention_version=exported.calling_convention_version)
  else:
    artifact, extra = _export_onnx(model, params, head)
    info = metadata(model, head, fmt, forward, **extra)
  with atomic.directory(out_dir, replace=True) as tmp:
    (tmp / ARTIFACT_FILES[fmt]).write_bytes(artifact)
    (tmp / METADATA_FILE).write_text(records.strict_json(info))
    for name in convert.TOKENIZER_FILES:
      if (Path(src) / name).is_file():
        shutil.copy2(Path(src) / name, tmp / name)
  return out_dir


def _export_onnx(model, params, head: str) -> tuple[bytes, dict]:
  import importlib.util
  from distilbert_jax.serving import onnx_export
  if importlib.util.find_spec("jax2onnx") is None:
    raise ExportError("export --format onnx needs the jax2onnx and onnxruntime packages (docs/serving-export.md)")
  forward = forward_function(model, params, head, explicit_positions=True)
  outputs = [spec["name"] for spec in output_specs(forward, model.config, head)]
  return onnx_export.export_onnx(forward, input_names(model.config), input_axes(head), outputs,
                                 f"{model.config.model_type}_{head}")


def _read_hf_config(directory: Path) -> dict:
  config_file = directory / "config.json"
  if not directory.is_dir():
    raise ExportError(f"{directory}: no such model directory")
  try:
    return json.loads(config_file.read_text())
  except FileNotFoundError as e:
    raise ExportError(f"{config_file}: missing config file") from e
  except ValueError as e:
    raise ExportError(f"{config_file}: not JSON ({str(e).splitlines()[0]})") from e


def read_metadata(out_dir) -> dict:
  """metadata.json of an export directory."""
  path = Path(out_dir) / METADATA_FILE
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise ExportError(f"{path}: cannot read the export's metadata ({type(e).__name__})") from e


def load(out_dir) -> Callable[..., dict]:
  """The StableHLO artifact in out_dir as forward(*inputs) -> {output name: np.ndarray}.

  inputs: int32 NumPy arrays [batch, length] in metadata.json's order (token_type_ids may be
  left out: zeros). Compiled once per shape, on JAX's default device."""
  from distilbert_jax import models
  info = read_metadata(out_dir)
  if info.get("format") != "stablehlo":
    raise ExportError(f"{Path(out_dir) / METADATA_FILE}: format {info.get('format')!r}; load() reads stablehlo")
  path = Path(out_dir) / info["file"]
  try:
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
  except OSError as e:
    raise ExportError(f"{path}: cannot read the artifact ({type(e).__name__})") from e
  names = [spec["name"] for spec in info["inputs"]]
  call = jax.jit(exported.call, compiler_options=models.compiler_options(info["head"]))

  def forward(*inputs) -> dict:
    if len(inputs) == len(names) - 1 and names[-1] == "token_type_ids":
      inputs = (*inputs, np.zeros_like(inputs[0]))
    if len(inputs) != len(names):
      raise ExportError(f"{out_dir}: the artifact takes {', '.join(names)}; got {len(inputs)} arrays")
    if np.shape(inputs[0])[-1] > info["max_length"]:
      raise ExportError(f"{out_dir}: inputs of {np.shape(inputs[0])[-1]} tokens are longer than max_length="
                        f"{info['max_length']}")
    return jax.device_get(call(*(np.asarray(x, np.int32) for x in inputs)))
  return forward
