"""A student initialised from a teacher: its config, the teacher layers it takes, and its
parameters copied from the teacher's (BERT names renamed to DistilBERT's as
extract_distilbert.py does)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from distilbert_jax import models
from distilbert_jax.convert.layout import _checked, _fit_params, _is_unrolled, _layout_shapes
from distilbert_jax.convert.names import BASE_SCOPE, LAYER_PATH, architecture_name
from distilbert_jax.models import layers as model_layers

log = logging.getLogger(__name__)


# BERT parameter paths and their DistilBERT names (extract_distilbert.py), matched by prefix.
# In the base model: token types and the pooler have no DistilBERT counterpart.
BERT_TO_DISTILBERT_BODY = {("embeddings", n): ("embeddings", n)
                           for n in ("word_embeddings", "position_embeddings", "LayerNorm")}
# In one layer:
BERT_TO_DISTILBERT_LAYER = {
    ("attention", "self", "query"): ("attention", "q_lin"), ("attention", "self", "key"): ("attention", "k_lin"),
    ("attention", "self", "value"): ("attention", "v_lin"), ("attention", "output", "dense"): ("attention", "out_lin"),
    ("attention", "output", "LayerNorm"): ("sa_layer_norm",), ("intermediate", "dense"): ("ffn", "lin1"),
    ("output", "dense"): ("ffn", "lin2"), ("output", "LayerNorm"): ("output_layer_norm",),
}
# The MLM head (the untied decoder's kernel included):
BERT_TO_DISTILBERT_HEAD = {
    ("cls", "predictions", "transform", "dense"): ("vocab_transform",),
    ("cls", "predictions", "transform", "LayerNorm"): ("vocab_layer_norm",),
    ("cls", "predictions", "decoder"): ("vocab_projector",), ("cls", "predictions", "bias"): ("vocab_projector", "bias"),
}


def default_student_layers(teacher_layers: int, student_layers: Optional[int] = None) -> tuple[int, ...]:
  """Evenly spaced teacher layers, first and last included: round(linspace(0, n - 1, k)).
  For 12 -> 6 this is (0, 2, 4, 7, 9, 11), extract_distilbert.py's choice; k defaults to n // 2."""
  k = student_layers or max(teacher_layers // 2, 1)
  if not 1 <= k <= teacher_layers:
    raise ValueError(f"cannot pick {k} student layers from a {teacher_layers}-layer teacher")
  return tuple(int(i) for i in np.round(np.linspace(0, teacher_layers - 1, k)))


def _student_config(teacher_config, student_type: str, n_layers: int, overrides: dict):
  t = teacher_config
  compile_fields = {f: getattr(t, f) for f in model_layers.COMPILE_FIELDS}
  if student_type == t.model_type:
    counted = "n_layers" if student_type == "distilbert" else "num_hidden_layers"
    return dataclasses.replace(t, **{counted: n_layers}, **overrides)
  if student_type == "distilbert":
    if t.layer_norm_eps != 1e-12:
      log.warning("DistilBERT fixes LayerNorm eps at 1e-12; the teacher used %g", t.layer_norm_eps)
    inherited = dict(
        vocab_size=t.vocab_size, max_position_embeddings=t.max_position_embeddings, n_layers=n_layers,
        n_heads=t.num_attention_heads, dim=t.hidden_size, hidden_dim=t.intermediate_size,
        dropout=t.hidden_dropout_prob, attention_dropout=t.attention_probs_dropout_prob, activation=t.hidden_act,
        initializer_range=t.initializer_range, pad_token_id=t.pad_token_id,
        tie_word_embeddings=t.tie_word_embeddings, id2label=t.id2label, **compile_fields)
    return models.DistilBertConfig(**{**inherited, **overrides})  # any inherited field may be overridden
  raise ValueError(f"a {student_type} student from a {t.model_type} teacher is not supported")


def _rename(path: tuple, table: Optional[dict]) -> Optional[tuple]:
  """path with its prefix renamed by `table` (None: every path as it is); None if no entry matches."""
  if table is None:
    return path
  for old, new in table.items():
    if path[:len(old)] == old:
      return new + path[len(old):]
  return None


def _take_layers(layer_dict: dict, chosen: tuple[int, ...], stacked: bool) -> dict:
  """Layers `chosen` of a `layer` scope in either layout -> layers 0..k-1, stacked on a leading
  axis (stacked=True) or unrolled ({"0": ..., "1": ...}); numpy copies, never views of the input."""
  if _is_unrolled(layer_dict):
    picked = [layer_dict[str(i)] for i in chosen]
    if stacked:
      return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *picked)
    return {str(s): jax.tree.map(np.array, layer) for s, layer in enumerate(picked)}
  index = np.asarray(chosen)
  taken = jax.tree.map(lambda x: np.asarray(x[index]), layer_dict)  # one gather along the `layers` axis
  if stacked:
    return taken
  return {str(s): jax.tree.map(lambda x: x[s], taken) for s in range(len(chosen))}


def student_config_of(teacher_config, *, layers: Optional[Sequence[int]] = None, student_type: str = "distilbert",
                      **student_config_overrides):
  """(student config, the teacher layers it takes) of student_from_teacher, from the teacher's
  config alone: what an ahead-of-time compile needs, with no weights read."""
  overrides = dict(student_config_overrides)
  count = overrides.pop("n_layers", None) or overrides.pop("num_hidden_layers", None)
  if layers is None:
    layers = default_student_layers(teacher_config.num_hidden_layers, count)
  layers = tuple(int(i) for i in layers)
  if not layers or any(not 0 <= i < teacher_config.num_hidden_layers for i in layers):
    raise ValueError(f"layers {layers} must be a non-empty list of teacher layers "
                     f"0..{teacher_config.num_hidden_layers - 1}")
  if count is not None and count != len(layers):
    raise ValueError(f"{len(layers)} layers chosen but the overrides ask for {count}")
  return _student_config(teacher_config, student_type, len(layers), overrides), layers


def student_from_teacher(teacher_config, teacher_params, *, teacher_head: str, layers: Optional[Sequence[int]] = None,
                         student_type: str = "distilbert", student_head: str = "masked_lm",
                         rng: Optional[jax.Array] = None, **student_config_overrides):
  """(student_config, student_params) initialised from chosen teacher layers, as the original
  scripts/extract_distilbert.py: word and position embeddings and the embedding LayerNorm;
  teacher layers `layers` (default: default_student_layers) become student layers 0..k-1; the MLM
  transform and output bias when both have an MLM head; parameters the teacher lacks (e.g. an
  MLM head under a BertModel teacher, a classifier) are newly initialised from rng.

  A DistilBERT student has no token-type embeddings. BERT adds token_type_embeddings[0] to every
  position; extract_distilbert.py drops it (it does not fold it into the position table), and so
  do we: the student's first outputs differ from the teacher's by that vector. A BERT student
  (student_type="bert") keeps token types and the pooler, so all of a teacher's layers reproduce
  the teacher exactly. Teacher params may be in either layout; the student's follow its config.
  """
  student_config, layers = student_config_of(teacher_config, layers=layers, student_type=student_type,
                                             **student_config_overrides)

  source = f"student of {architecture_name(teacher_config, teacher_head)}"
  t_type = teacher_config.model_type
  flat_teacher = _checked(teacher_params, teacher_config, teacher_head, "teacher params")
  renamed = t_type != student_type  # a BERT teacher, a DistilBERT student
  t_base = () if teacher_head == "base" else (BASE_SCOPE[t_type],)
  s_base = () if student_head == "base" else (BASE_SCOPE[student_type],)
  student = {}
  for path, value in flat_teacher.items():
    if t_base and path[0] != t_base[0]:  # a head parameter: cls/..., classifier/...
      new = _rename(path, BERT_TO_DISTILBERT_HEAD if renamed else None)
    elif path[len(t_base):][:2] == LAYER_PATH[t_type]:
      continue  # the chosen layers are taken below
    else:
      new = _rename(path[len(t_base):], BERT_TO_DISTILBERT_BODY if renamed else None)
      new = None if new is None else s_base + new
    if new is not None:
      student[new] = np.array(value)
  t_layer_scope, layer_scope = t_base + LAYER_PATH[t_type], s_base + LAYER_PATH[student_type]
  t_layers = traverse_util.unflatten_dict({p[len(t_layer_scope):]: v for p, v in flat_teacher.items()
                                           if p[:len(t_layer_scope)] == t_layer_scope})
  chosen = _take_layers(t_layers, layers, stacked=student_config.scan_layers)
  for path, value in traverse_util.flatten_dict(chosen).items():
    index, inner = ((), path) if student_config.scan_layers else (path[:1], path[1:])
    student[layer_scope + index + _rename(inner, BERT_TO_DISTILBERT_LAYER if renamed else None)] = value
  # What the student's head lacks (another head's parameters, a sinusoidal student's position
  # table) is left behind; what the teacher lacks is newly initialised.
  expected = _layout_shapes(student_config, student_head, student_config.scan_layers)
  student = {p: v for p, v in student.items() if p in expected}
  params = _fit_params(student, student_config, student_head, init_missing_heads=True, rng=rng,
                       param_dtype=jnp.float32, source=source)
  return student_config, params
