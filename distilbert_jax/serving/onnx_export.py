"""The ONNX route of `distilbert-jax export`: the model's forward converted by jax2onnx, with
dynamic batch and length axes, for onnxruntime and other ONNX servers.

export.py passes the forward (export.forward_function with explicit position ids: jax2onnx
cannot broadcast the model's arange over a dynamic length) and checks that jax2onnx is
installed. ONNX has no constraint on a dynamic axis: inputs longer than max_length
(metadata.json) are the caller's to refuse.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

OPSET = 23


def export_onnx(forward: Callable, input_names: Sequence[str], input_axes: Sequence[str],
                output_names: Sequence[str], model_name: str) -> tuple[bytes, dict]:
  """(the serialized ONNX model, metadata fields of the route) of forward(*inputs) -> {name:
  array}: int32 inputs of shape input_axes (dynamic, named), outputs in output_names' order."""
  import jax2onnx
  as_tuple = lambda *inputs: tuple(forward(*inputs)[name] for name in output_names)
  # onnx_ir warns once per shape-less constant it writes; the model is complete without them.
  serde_log = logging.getLogger("onnx_ir.serde")
  level = serde_log.level
  serde_log.setLevel(logging.ERROR)
  try:
    proto = jax2onnx.to_onnx(as_tuple, [jax.ShapeDtypeStruct(tuple(input_axes), jnp.int32)] * len(input_names),
                             model_name=model_name, opset=OPSET, input_names=list(input_names),
                             output_names=list(output_names))
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
