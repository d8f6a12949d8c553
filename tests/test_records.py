"""records: the JSON the project writes is strict JSON, an undefined value null."""
import json

import numpy as np

from distilbert_jax import records


def test_undefined_values_at_any_depth_are_null_and_the_text_is_strict_json():
  value = {"pearson": float("nan"), "f1": float("inf"), "accuracy": 0.5, "num_examples": 3,
           "metrics": {"eval_loss": np.float32("nan"), "eval_f1": np.float32(0.25)}, "curve": [1.0, float("-inf")]}
  text = records.strict_json(value)
  assert "NaN" not in text and "Infinity" not in text and text.endswith("}\n")
  assert json.loads(text) == {"pearson": None, "f1": None, "accuracy": 0.5, "num_examples": 3,
                              "metrics": {"eval_loss": None, "eval_f1": 0.25}, "curve": [1.0, None]}


def test_one_line_form_for_jsonl():
  assert records.strict_json({"step": 2, "loss": float("nan")}, indent=None) == '{"step": 2, "loss": null}'
