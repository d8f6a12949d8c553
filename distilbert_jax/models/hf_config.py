"""Config dataclasses to and from Hugging Face config.json dicts.

The same conversion serves both architectures' configs (bert.BertConfig,
distilbert.DistilBertConfig); the compile fields are ours and never reach a Hugging Face file.
"""
from __future__ import annotations

import dataclasses


# Config fields that are ours, not Hugging Face's: how the encoder is compiled. They live in our
# Flax directories' config.json and never in an exported Hugging Face one.
COMPILE_FIELDS = ("scan_layers", "remat_policy", "attention_impl")
# Hugging Face's label names when a config names none (num_labels=2).
DEFAULT_LABELS = ("LABEL_0", "LABEL_1")


def config_from_hf_dict(cls, d: dict):
  """A frozen config dataclass from a Hugging Face config.json dict (unknown keys ignored)."""
  kwargs = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d and f.name != "id2label"}
  if "id2label" in d:
    kwargs["id2label"] = tuple(d["id2label"][k] for k in sorted(d["id2label"], key=int))
  elif "num_labels" in d:
    kwargs["id2label"] = tuple(f"LABEL_{i}" for i in range(d["num_labels"]))
  if kwargs.get("id2label") == DEFAULT_LABELS:
    kwargs["id2label"] = None  # what config_to_hf_dict writes for None: the round trip is exact
  return cls(**kwargs)


def config_to_hf_dict(config, include_compile_fields: bool = False) -> dict:
  """The Hugging Face config.json dict of a config dataclass, with id2label and label2id; the
  COMPILE_FIELDS only with include_compile_fields (our own Flax directories)."""
  d = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
  names = d.pop("id2label") or DEFAULT_LABELS
  d["id2label"] = {str(i): n for i, n in enumerate(names)}
  d["label2id"] = {n: i for i, n in enumerate(names)}
  if not include_compile_fields:
    for name in COMPILE_FIELDS:
      d.pop(name)
  d["model_type"] = config.model_type
  return d
