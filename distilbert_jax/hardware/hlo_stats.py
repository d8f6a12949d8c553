"""What one device does in a compiled XLA program: FLOPs, memory traffic and collectives, read
from its optimised HLO text (`jax.stages.Compiled.as_text()`).

XLA's own `cost_analysis()` counts a loop body once, and the train step is made of loops (the
micro-batch scan, scanned layers): for the paper's recipe it reported a twentieth of the step's
FLOPs. It is also None on GPU. Here every computation counts as often as it runs: a while
loop's body times its known trip count, a fusion's instructions as often as the fusion.

  flops           2 x output elements x contracted size of every dot, convolution and cuBLAS
                  matrix product, as in Kaplan et al. (2020)
  bytes_accessed  operands and results of each instruction outside fusions: what a device reads
                  from and writes to its HBM, to first order; a dynamic slice reads only its
                  slice and a dynamic update writes only its update, in place (the stacked
                  buffers of scanned layers and micro-batches)
  collectives     {kind: instructions executed}; collective_bytes the bytes each device sends
                  in bandwidth-optimal (ring) algorithms, with n devices in a group and S the
                  operand's bytes: all-reduce 2S(n-1)/n, all-gather S(n-1), reduce-scatter and
                  all-to-all S(n-1)/n, collective-permute S
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Optional

ITEM_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
              "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_ARRAY = re.compile(r"\b(pred|[su](?:4|8|16|32|64)|f(?:16|32|64)|bf16|f8\w*|c64|c128)\[([\d,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([^\s(]+)\s*\(.*\{\s*$")
_NAME = re.compile(r"%([\w.\-]+)")
# Instructions that move no data of their own (views, bookkeeping) or whose work is counted in
# the computations they call.
_NO_TRAFFIC = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "call", "conditional",
               "after-all", "partition-id", "replica-id", "opt-barrier", "async-start", "async-update", "async-done",
               "all-reduce-done", "all-gather-done", "collective-permute-done", "copy-done", "send-done",
               "recv-done", "slice-done"}


@dataclasses.dataclass
class Instruction:
  name: str
  type: str  # "f32[8,16]{1,0}" or a tuple "(f32[8], s32[])"
  op: str
  operands: list  # the names of the operand instructions
  attributes: str
  literal: str = ""  # the text between the parentheses: a constant's value, a parameter's index
  is_root: bool = False


@dataclasses.dataclass
class HloStats:
  flops: float = 0.0
  bytes_accessed: float = 0.0
  collectives: dict = dataclasses.field(default_factory=dict)  # kind -> instructions executed
  collective_bytes: float = 0.0  # within a slice or node
  network_bytes: float = 0.0  # in groups larger than a slice or node (the data-centre network)
  unknown_trip_counts: int = 0  # while loops counted once for want of a known trip count


def array_bytes(type_text: str) -> float:
  """Bytes of every array in an HLO type (a tuple's elements summed)."""
  return sum(math.prod(int(d) for d in dims.split(",") if d) * ITEM_BYTES.get(dtype, 1)
             for dtype, dims in _ARRAY.findall(type_text))


def _dims(type_text: str) -> list:
  match = _ARRAY.search(type_text)
  return [int(d) for d in match.group(2).split(",") if d] if match else []


def _split_instruction(line: str) -> Optional[Instruction]:
  text = line.strip()
  is_root = text.startswith("ROOT ")
  if is_root:
    text = text[5:]
  name, eq, rest = text.partition(" = ")
  if not eq or not name.startswith("%") and not re.match(r"^[\w.\-]+$", name):
    return None
  if rest.startswith("("):  # a tuple type: up to its closing parenthesis
    depth = 0
    for i, ch in enumerate(rest):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        break
    type_text, rest = rest[:i + 1], rest[i + 1:].lstrip()
  else:
    type_text, _, rest = rest.partition(" ")
  op, paren, rest = rest.partition("(")
  if not paren:
    return None
  depth, end = 1, len(rest)
  for i, ch in enumerate(rest):
    depth += ch == "("
    depth -= ch == ")"
    if depth == 0:
      end = i
      break
  return Instruction(name.lstrip("%"), type_text, op.strip(), _NAME.findall(rest[:end]), rest[end + 1:],
                     rest[:end], is_root)


def parse_module(text: str) -> tuple[dict, str]:
  """({computation name: [Instruction]}, the entry computation's name)."""
  computations, entry, current = {}, None, None
  for line in text.splitlines():
    if current is None:
      header = _HEADER.match(line)
      if header and "=" not in line.split("(")[0]:
        current = header.group(2)
        computations[current] = []
        if header.group(1):
          entry = current
      continue
    if line.strip() == "}":
      current = None
      continue
    instruction = _split_instruction(line)
    if instruction is not None:
      computations[current].append(instruction)
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text")
  return computations, entry


def _attribute(attributes: str, key: str) -> Optional[str]:
  match = re.search(rf"\b{key}=(%?[\w.\-]+|\{{[^}}]*\}})", attributes)
  return match.group(1).lstrip("%") if match else None


def _trip_count(instruction: Instruction, computations: dict) -> Optional[int]:
  """A while loop's trip count: XLA's known_trip_count where the backend records it (GPU), else
  the bound N of its condition `i < N` against a constant, for a counter from 0 in steps of 1
  (how jax lowers lax.scan and fori_loop)."""
  match = re.search(r'"known_trip_count":\{"n":"(\d+)"', instruction.attributes)
  if match:
    return int(match.group(1))
  condition = computations.get(_attribute(instruction.attributes, "condition"), ())
  constants = {i.name: int(i.literal) for i in condition
               if i.op == "constant" and re.fullmatch(r"-?\d+", i.literal.strip())}
  for compare in condition:
    if compare.op == "compare" and "direction=LT" in compare.attributes and compare.operands[-1:] and \
        compare.operands[-1] in constants:
      return constants[compare.operands[-1]]
  return None


def _group_size(attributes: str, num_partitions: int) -> int:
  """Devices in one replica group; replica_groups is written as a list ({{0,1},{2,3}}), an iota
  ([2,2]<=[4]) or mesh axes (mesh['axis_0'=4,'axis_1'=2] {'axis_0'})."""
  named = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attributes)
  if named:
    sizes = {k: int(v) for k, v in re.findall(r"'(\w+)'=(\d+)", named.group(1))}
    return math.prod(sizes[a] for a in re.findall(r"'(\w+)'", named.group(2)))
  iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attributes)
  if iota:
    return int(iota.group(2))
  listed = re.search(r"replica_groups=\{\{([\d,]*)\}", attributes)
  if listed:
    return len([x for x in listed.group(1).split(",") if x])
  return num_partitions  # replica_groups={}: every device


def _dot_flops(instruction: Instruction, shapes: dict) -> float:
  lhs = _dims(shapes.get(instruction.operands[0], "")) if instruction.operands else []
  contracting = _attribute(instruction.attributes, "lhs_contracting_dims") or "{}"
  size = math.prod(lhs[int(d)] for d in contracting.strip("{}").split(",") if d)
  return 2.0 * math.prod(_dims(instruction.type)) * size


def _convolution_flops(instruction: Instruction, shapes: dict) -> float:
  """2 x output elements x input features x the window taps that meet input data. TPU compilers
  write batched matrix products as convolutions whose batch dimensions are spatial ones, with a
  window as large as the batch and the input dilated as much: one tap of each meets data."""
  labels = re.search(r"dim_labels=\w+_(\w+)->\w+", instruction.attributes)
  kernel = _dims(shapes.get(instruction.operands[1], "")) if len(instruction.operands) > 1 else []
  if not labels or not kernel or "i" not in labels.group(1):
    return 0.0
  rhs = labels.group(1)
  spatial = [kernel[k] for k, label in enumerate(rhs) if label not in "io"]
  window = re.search(r"window=\{([^}]*)\}", instruction.attributes)
  sizes = re.search(r"size=([\dx]+)", window.group(1)) if window else None
  dilations = re.search(r"lhs_dilate=([\dx]+)", window.group(1)) if window else None
  sizes = [int(x) for x in sizes.group(1).split("x")] if sizes else spatial
  dilations = [int(x) for x in dilations.group(1).split("x")] if dilations else [1] * len(sizes)
  taps = math.prod(math.ceil(size / dilation) for size, dilation in zip(sizes, dilations))
  return 2.0 * math.prod(_dims(instruction.type)) * kernel[rhs.index("i")] * taps


def _gemm_flops(instruction: Instruction, shapes: dict) -> float:
  """cuBLAS products (custom-call __cublas$gemm, __cublas$lt$matmul): contracting dims in the
  backend config's dot_dimension_numbers."""
  config = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', instruction.attributes)
  lhs = _dims(shapes.get(instruction.operands[0], "")) if instruction.operands else []
  if not config or not lhs:
    return 0.0
  size = math.prod(lhs[int(d.strip('"'))] for d in config.group(1).split(",") if d.strip())
  return 2.0 * math.prod(_dims(instruction.type)) * size


def _collective_bytes(kind: str, operand_bytes: float, n: int) -> float:
  if n <= 1:
    return 0.0
  return {"all-reduce": 2 * operand_bytes * (n - 1) / n, "all-gather": operand_bytes * (n - 1),
          "reduce-scatter": operand_bytes * (n - 1) / n, "all-to-all": operand_bytes * (n - 1) / n,
          "collective-permute": operand_bytes}[kind]


def _param_read(computation: list, param: str, full: float, computations: dict) -> float:
  """Bytes of fusion parameter `param` (of `full` bytes) that the fused computation reads: only
  the slices where every use is a dynamic slice, followed into nested fusions."""
  read = 0.0
  for user in (i for i in computation if param in i.operands):
    if user.op == "dynamic-slice" and user.operands[0] == param:
      read += array_bytes(user.type)
    elif user.op == "fusion":
      nested = computations.get(_attribute(user.attributes, "calls"), ())
      params = {int(i.literal.strip() or 0): i.name for i in nested if i.op == "parameter"}
      read += sum(_param_read(nested, params[k], full, computations)
                  for k, o in enumerate(user.operands) if o == param and k in params)
    else:
      return full
  return min(read, full)


def _in_place_updates(computation: list, computations: dict) -> dict:
  """{parameter index: (bytes of the output written in place, bytes of the update)} for the
  outputs of a fused computation that update a parameter in place: dynamic-update-slices at its
  root, in a root tuple, or in a nested fusion at its root."""
  by_name = {i.name: i for i in computation}
  root = next((i for i in computation if i.is_root), None)
  outputs = [by_name[o] for o in root.operands if o in by_name] if root is not None and root.op == "tuple" \
      else [root] if root is not None else []
  updates = {}
  for out in outputs:
    if out.op == "dynamic-update-slice":
      target = by_name.get(out.operands[0])
      if target is not None and target.op == "parameter":
        updates[int(target.literal.strip() or 0)] = (array_bytes(out.type),
                                                      array_bytes(by_name[out.operands[1]].type))
    elif out.op == "fusion":
      inner = _in_place_updates(computations.get(_attribute(out.attributes, "calls"), ()), computations)
      for k, sizes in inner.items():
        target = by_name.get(out.operands[k]) if k < len(out.operands) else None
        if target is not None and target.op == "parameter":
          updates[int(target.literal.strip() or 0)] = sizes
  return updates


def _traffic(instruction: Instruction, computations: dict, shapes: dict) -> float:
  """HBM bytes one top-level instruction reads and writes."""
  operand_bytes = [array_bytes(shapes.get(o, "")) for o in instruction.operands]
  if instruction.op == "dynamic-slice":
    return 2 * array_bytes(instruction.type)
  if instruction.op == "slice-start":  # an asynchronous slice: (operand, slice, ...) -> the slice
    return 2 * max(array_bytes(instruction.type) - sum(operand_bytes), 0.0)
  if instruction.op == "dynamic-update-slice":
    return 2 * operand_bytes[1]
  if instruction.op != "fusion":
    return array_bytes(instruction.type) + sum(operand_bytes)
  fused = computations.get(_attribute(instruction.attributes, "calls"), ())
  written = array_bytes(instruction.type)
  updates = _in_place_updates(fused, computations)
  for output_bytes, update_bytes in updates.values():  # writes only the update, in place
    written -= output_bytes - update_bytes
  read = 0.0
  for param in (i for i in fused if i.op == "parameter"):
    index = int(param.literal.strip() or 0)
    if index < len(operand_bytes) and index not in updates:
      read += _param_read(fused, param.name, operand_bytes[index], computations)
  return read + max(written, 0.0)


def analyse(text: str, num_partitions: int, devices_per_node: Optional[int] = None) -> HloStats:
  """HloStats of one device of an SPMD-partitioned module. devices_per_node: the devices of one
  TPU slice or GPU node; a collective over a larger group is counted in network_bytes."""
  computations, entry = parse_module(text)
  stats = HloStats()
  shapes = {}
  for instructions in computations.values():
    shapes.update({i.name: i.type for i in instructions})

  def visit(name: str, times: float, fused: bool):
    for instruction in computations.get(name, ()):
      op = instruction.op
      if op == "dot":
        stats.flops += times * _dot_flops(instruction, shapes)
      elif op == "convolution":
        stats.flops += times * _convolution_flops(instruction, shapes)
      elif op == "custom-call" and "__cublas$" in instruction.attributes:
        stats.flops += times * _gemm_flops(instruction, shapes)
      kind = op[:-len("-start")] if op.endswith("-start") else op
      if kind in COLLECTIVES:
        stats.collectives[kind] = stats.collectives.get(kind, 0) + times
        n = _group_size(instruction.attributes, num_partitions)
        sent = times * _collective_bytes(kind, sum(array_bytes(shapes.get(o, "")) for o in instruction.operands), n)
        if devices_per_node and n > devices_per_node:
          stats.network_bytes += sent
        else:
          stats.collective_bytes += sent
      if not fused and op not in _NO_TRAFFIC:
        stats.bytes_accessed += times * _traffic(instruction, computations, shapes)
      if op == "while":
        trips = _trip_count(instruction, computations)
        if trips is None:
          stats.unknown_trip_counts += 1
        visit(_attribute(instruction.attributes, "body"), times * (trips or 1), fused)
      elif op == "fusion":
        visit(_attribute(instruction.attributes, "calls"), times, True)
      elif op in ("call", "async-start"):
        visit(_attribute(instruction.attributes, "to_apply") or _attribute(instruction.attributes, "calls"), times,
              fused)
      elif op == "conditional":  # each branch once: an upper bound
        for branch in re.findall(r"%([\w.\-]+)", _attribute(instruction.attributes, "branch_computations") or ""):
          visit(branch, times, fused)

  visit(entry, 1.0, False)
  return stats
