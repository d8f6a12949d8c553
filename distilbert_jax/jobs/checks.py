"""The config checks that every job shares; each job's check_config calls them first.

  check_schedule(config)    train.*: batch, accumulation, logging and checkpoint intervals
  check_directory(path, key) a model directory (or Hub repo id) the config names exists
  check_processes(config)   the batch splits over the processes (needs jax.distributed up)
  check_layer_loss_fields(loss)  the attention and relation loss fields, before any model is read
  check_layer_losses(...)   the hidden, attention and relation losses fit the two models
  checked_layer_pairs(...)  the layers and relation heads of those losses, checked
"""
from __future__ import annotations

import jax

from distilbert_jax import attention_losses, errors


def check_schedule(config) -> None:
  """train.batch_size splits into train.grad_accum_steps micro-batches; intervals are positive."""
  t = config.train
  if t.batch_size <= 0 or t.grad_accum_steps <= 0 or t.batch_size % t.grad_accum_steps:
    raise errors.ConfigError(f"train.batch_size={t.batch_size} must be a positive multiple of "
                             f"train.grad_accum_steps={t.grad_accum_steps}")
  for name in ("log_every", "checkpoint_every"):
    if t[name] <= 0:
      raise errors.ConfigError(f"train.{name}={t[name]} must be > 0")


def check_directory(path: str, key: str) -> str:
  """`path`, from config key `key`, is an existing directory or a Hub repo id, which is looked up
  (downloaded unless cached) now, so that a bad one fails before anything is written. Returns
  the local directory; an empty path is not checked and is returned as is."""
  from distilbert_jax.convert import hub
  if not path:
    return path
  try:
    return hub.resolve(path)
  except hub.HubError as e:
    raise errors.ConfigError(f"{e} ({key})") from e


def check_processes(config) -> None:
  """Every process's share of the batch splits into train.grad_accum_steps micro-batches."""
  t = config.train
  if t.batch_size % (jax.process_count() * t.grad_accum_steps):
    raise errors.ConfigError(f"train.batch_size={t.batch_size} must divide by processes ({jax.process_count()}) "
                             f"x train.grad_accum_steps ({t.grad_accum_steps})")


def check_layer_loss_fields(loss) -> None:
  """The attention and relation loss fields of a config's `loss` section, before any model is
  read: weights >= 0, loss.relation_heads >= 0, loss.relation_layers pairs of layer indices."""
  for name in ("alpha_attention", "alpha_relation", "alpha_attention_kl", "alpha_value_relation"):
    if loss.get(name, 0.0) < 0:
      raise errors.ConfigError(f"loss.{name}={loss[name]} must be >= 0")
  if loss.get("relation_heads", 0) < 0:
    raise errors.ConfigError(f"loss.relation_heads={loss.relation_heads} must be >= 0 (0: the student's heads)")
  for pair in loss.get("relation_layers", ()):
    if len(pair) != 2 or not all(isinstance(i, int) and i >= 0 for i in pair):
      raise errors.ConfigError(f"loss.relation_layers={tuple(loss.relation_layers)} must hold (student layer, "
                               f"teacher layer) pairs of 0-based indices, e.g. ((2, 5),)")


def checked_layer_pairs(loss, student_config, teacher_config, hidden_map, hidden_projection: bool = False) -> tuple:
  """(attention pairs, relation pairs, relation heads) of the layer losses, layers 0-based: the
  layers hidden_map pairs (hidden-state indices), loss.relation_layers or the last of each, and
  loss.relation_heads or the student's head count; checked by check_layer_losses.
  hidden_projection: the job learns a projection of the student's hidden states (TinyBERT's
  W_h), so loss.alpha_hidden allows unequal widths."""
  s, t = student_config, teacher_config
  attention_pairs = attention_losses.attention_layer_pairs(hidden_map)
  relation_pairs = attention_losses.relation_layer_pairs(loss.relation_layers, s.num_hidden_layers, t.num_hidden_layers)
  relation_heads = loss.relation_heads or s.num_attention_heads
  check_layer_losses(loss, s, t, attention_pairs, relation_pairs, relation_heads, hidden_projection)
  return attention_pairs, relation_pairs, relation_heads


def check_layer_losses(loss, student_config, teacher_config, attention_pairs, relation_pairs, relation_heads,
                       hidden_projection: bool = False) -> None:
  """The hidden, attention and relation losses fit the two models: equal widths for the hidden
  states (unless hidden_projection), equal head counts for the attention scores, relation heads
  that divide both widths, layer indices inside both stacks."""
  check_layer_loss_fields(loss)
  s, t = student_config, teacher_config
  if loss.alpha_hidden > 0 and s.hidden_size != t.hidden_size and not hidden_projection:
    raise errors.ConfigError(f"loss.alpha_hidden needs equal hidden sizes, but the student's is {s.hidden_size} and "
                             f"the teacher's {t.hidden_size} (general distillation learns no projection; task "
                             f"distillation in finetune does): use loss.alpha_relation, which allows any widths")
  if loss.get("alpha_attention", 0.0) > 0:
    if s.num_attention_heads != t.num_attention_heads:
      raise errors.ConfigError(f"loss.alpha_attention needs equal head counts, but the student has "
                               f"{s.num_attention_heads} and the teacher {t.num_attention_heads}: use "
                               f"loss.alpha_relation, which allows any head counts")
    if not attention_pairs:
      raise errors.ConfigError("loss.alpha_attention > 0 but loss.hidden_layer_map pairs no layers past the "
                               "embeddings (index 0)")
    _check_layer_pairs("loss.hidden_layer_map", tuple((a + 1, b + 1) for a, b in attention_pairs),
                       s.num_hidden_layers + 1, t.num_hidden_layers + 1)
  minilm = [f"loss.{n}" for n in ("alpha_attention_kl", "alpha_value_relation") if loss.get(n, 0.0) > 0]
  if minilm:
    if s.num_attention_heads != t.num_attention_heads:
      raise errors.ConfigError(f"{' and '.join(minilm)} need equal head counts, but the student has "
                               f"{s.num_attention_heads} and the teacher {t.num_attention_heads}: use "
                               f"loss.alpha_relation, which allows any head counts")
    _check_layer_pairs("loss.relation_layers", relation_pairs, s.num_hidden_layers, t.num_hidden_layers)
  if loss.get("alpha_relation", 0.0) > 0:
    for who, width in (("student", s.hidden_size), ("teacher", t.hidden_size)):
      if width % relation_heads:
        raise errors.ConfigError(f"loss.relation_heads={relation_heads} does not divide the {who}'s width {width}")
    _check_layer_pairs("loss.relation_layers", relation_pairs, s.num_hidden_layers, t.num_hidden_layers)


def _check_layer_pairs(key: str, pairs, student_count: int, teacher_count: int) -> None:
  for a, b in pairs:
    if not (0 <= a < student_count and 0 <= b < teacher_count):
      raise errors.ConfigError(f"{key}: the pair ({a}, {b}) is outside the student's 0..{student_count - 1} or "
                               f"the teacher's 0..{teacher_count - 1}")
