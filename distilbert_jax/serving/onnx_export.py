"""The ONNX route of `distilbert-jax export`: the model's forward converted by jax2onnx, with
dynamic batch and length axes, for onnxruntime and other ONNX servers.

The forward is export.forward_function's with explicit position ids: jax2onnx cannot broadcast
the model's arange over a dynamic length. ONNX has no constraint on a dynamic axis: inputs
longer than max_length (metadata.json) are the caller's to refuse.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from distilbert_jax.serving import export

OPSET = 23


def export_onnx(model, params, head: str) -> tuple[bytes, dict]:
  """(the serialized ONNX model, metadata fields of the route). Inputs and outputs carry the
  names export.input_names and export.HEAD_OUTPUTS give."""
  try:
    import jax2onnx
  except ImportError as e:
    raise export.ExportError("export --format onnx needs the jax2onnx and onnxruntime packages "
                             "(pip install jax2onnx onnxruntime)") from e
  config = model.config
  forward = export.forward_function(model, params, head, explicit_positions=True)
  outputs = [spec["name"] for spec in export.output_specs(forward, config, head)]
  names = export.input_names(config)
  shape = export.input_axes(head)  # named dynamic axes
  as_tuple = lambda *inputs: tuple(forward(*inputs)[name] for name in outputs)
  # onnx_ir warns once per shape-less constant it writes; the model is complete without them.
  serde_log = logging.getLogger("onnx_ir.serde")
  level = serde_log.level
  serde_log.setLevel(logging.ERROR)
  try:
    proto = jax2onnx.to_onnx(as_tuple, [jax.ShapeDtypeStruct(shape, jnp.int32)] * len(names),
                             model_name=f"{config.model_type}_{head}", opset=OPSET,
                             input_names=list(names), output_names=outputs)
  finally:
    serde_log.setLevel(level)
  _share_equal_initializers(proto)
  from importlib.metadata import version
  return proto.SerializeToString(), {"onnx_opset": OPSET, "jax2onnx_version": version("jax2onnx")}


def _share_equal_initializers(proto) -> None:
  """Keeps one copy of initializers with the same type, shape and bytes (jax2onnx writes a
  parameter read in two places, the word embeddings, twice), renaming the graph's uses."""
  import hashlib
  from onnx import numpy_helper
  first, renamed, kept = {}, {}, []
  for init in proto.graph.initializer:
    key = (init.data_type, tuple(init.dims), hashlib.sha256(numpy_helper.to_array(init).tobytes()).hexdigest())
    if key in first:
      renamed[init.name] = first[key]
    else:
      first[key] = init.name
      kept.append(init)
  if not renamed:
    return
  del proto.graph.initializer[:]
  proto.graph.initializer.extend(kept)
  for node in proto.graph.node:
    node.input[:] = [renamed.get(name, name) for name in node.input]
