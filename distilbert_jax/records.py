"""JSON records the project writes (metrics.jsonl, best.json, eval_results.json): strict JSON.

JSON has no NaN or Infinity; Python's json module writes them anyway, and strict readers
(JavaScript, jq, pandas with some engines) then fail on the whole file. An undefined value, a NaN
or infinite float at any depth, is written as null.
"""
from __future__ import annotations

import json
import math
from typing import Any, Optional

import numpy as np


def defined(value: Any) -> Any:
  """`value` with every non-finite float, in dicts and lists at any depth, replaced by None."""
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: defined(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [defined(v) for v in value]
  return value


def strict_json(value: Any, indent: Optional[int] = 2) -> str:
  """`value` as strict JSON text (no NaN or Infinity; see `defined`); with indent, one trailing
  newline."""
  text = json.dumps(defined(value), indent=indent, allow_nan=False)
  return text + "\n" if indent is not None else text
