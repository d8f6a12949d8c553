"""Distillation (Sanh et al., 2019) and teacher-free MLM pretraining, as a job of `train/`.

Inside the one jitted step: the dynamic MLM masking of the whole batch, the frozen teacher's
outputs, and the student's losses. The original trainer (transformers'
examples/research_projects/distillation/distiller.py) instead masks on the host and runs teacher
and student as separate calls under DDP.

Losses (section 3 of the paper; weights `config.loss.alpha_*`):
  loss_ce: KL(teacher || student) at temperature T, times T^2, over real (or masked) tokens
  loss_mlm: cross-entropy on masked tokens
  loss_cos: 1 - cos(student, teacher) last hidden states, over real tokens
  loss_mse: squared error of the logits; loss_hidden: MSE of chosen hidden layers (TinyBERT)
  loss_relation: KL of the Q-Q, K-K and V-V self-attention relations (MiniLMv2), over real tokens
Without a teacher only loss_mlm remains: MLM pretraining of the student.

With `config.loss.logits_at_masked_only` the vocabulary projection of student and teacher runs
only at the masked positions of the batch (a flat [n] index into batch * length, n the most
positions the masking can choose), which is exact for loss_mlm and, with `ce_masked_only`, for
loss_ce and loss_mse, and skips most of the largest matrix product of the step.

The job is built in parts, which benchmarks and the compile command also take one by one:
build_models (teacher and student, concrete or abstract), build_data or abstract_data (token
cache, iterator, masking weights), build_loss (DistillationLoss); job_from_parts joins them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distilbert_jax import attention_losses, convert, errors, losses, models, storage, train
from distilbert_jax.data import corpus, input_pipeline, masking, token_cache
from distilbert_jax.hardware import flops
from distilbert_jax.jobs import checks

LOSS_NAMES = ("ce", "mlm", "cos", "mse", "hidden", "relation", "attention_kl", "value_relation")
TEACHER_LOSSES = ("ce", "cos", "mse", "hidden", "relation", "attention_kl", "value_relation")


# ===================================================================================== checks
def has_teacher(config) -> bool:
  return bool(config.teacher.path or config.teacher.random_config)


def needs_logits(config) -> bool:
  l = config.loss
  return l.alpha_ce > 0 or l.alpha_mlm > 0 or l.alpha_mse > 0


def check_config(config: ml_collections.ConfigDict, data: bool = True) -> None:
  """Every check that needs no model and no text, so that a bad run fails in a second; without
  `data` (an ahead-of-time compile) only those of the step, none of the corpus or tokenizer."""
  l = config.loss
  for name in LOSS_NAMES:
    if getattr(l, f"alpha_{name}") < 0:
      raise errors.ConfigError(f"loss.alpha_{name}={getattr(l, f'alpha_{name}')} must be >= 0")
  if not any(getattr(l, f"alpha_{n}") > 0 for n in LOSS_NAMES):
    raise errors.ConfigError("every loss weight (loss.alpha_*) is 0: nothing to train")
  if not has_teacher(config):
    if any(getattr(l, f"alpha_{n}") > 0 for n in TEACHER_LOSSES):
      raise errors.ConfigError("teacher-free training (no teacher.path, no teacher.random_config) allows only "
                               "loss.alpha_mlm > 0")
    if config.student.init == "teacher":
      raise errors.ConfigError("student.init='teacher' needs a teacher (teacher.path or teacher.random_config)")
  if config.student.init not in ("teacher", "random"):
    raise errors.ConfigError(f"student.init must be 'teacher' or 'random', got {config.student.init!r}")
  if (l.alpha_mlm > 0 or (l.ce_masked_only and (l.alpha_ce > 0 or l.alpha_mse > 0))) \
      and config.mask.mlm_probability <= 0:
    raise errors.ConfigError("loss.alpha_mlm > 0 or loss.ce_masked_only need masked tokens: mask.mlm_probability "
                             "must be > 0")
  if l.logits_at_masked_only and (l.alpha_ce > 0 or l.alpha_mse > 0) and not l.ce_masked_only:
    raise errors.ConfigError("loss.logits_at_masked_only needs loss.ce_masked_only=True when loss_ce or loss_mse "
                             "is on (they would need the logits at every token)")
  checks.check_schedule(config)
  checks.check_directory(config.teacher.path, "teacher.path")
  positions = _max_positions(config)
  if positions is not None:
    input_pipeline.check_lengths(config.data, *positions)
  if not data:
    return
  if config.mask.token_counts and not os.path.isfile(config.mask.token_counts):
    raise errors.ConfigError(f"{config.mask.token_counts}: no such file (mask.token_counts)")
  if not config.data.sources:
    raise errors.ConfigError("data.sources is empty")
  files = [spec for spec in config.data.sources if spec != "embedded"]
  if files:
    token_cache.check_sources(files)
  tokenizer_dir = config.data.tokenizer_dir or config.teacher.path
  if not tokenizer_dir:
    raise errors.ConfigError("data.tokenizer_dir is empty and there is no teacher.path to take it from")
  if not os.path.isdir(tokenizer_dir):
    raise errors.ConfigError(f"{tokenizer_dir}: no such directory (data.tokenizer_dir)")
  vocab_size = _model_vocab_size(config)
  tokens = token_cache.tokenizer_vocab_size(tokenizer_dir)
  if vocab_size is not None and tokens != vocab_size:
    raise errors.ConfigError(f"the tokenizer in {tokenizer_dir} has {tokens} tokens but the model's vocabulary "
                             f"has {vocab_size}")


def _max_positions(config) -> Optional[tuple[int, str]]:
  """(the fewest positions of teacher and student, which model that is), from config files, or
  None without a teacher or student config to read."""
  s, t = config.student, config.teacher
  default = models.BertConfig.max_position_embeddings
  found = []
  if t.path:
    found.append((convert.read_model_config(t.path).max_position_embeddings, t.path))
  elif t.random_config:
    found.append((int(t.random_config.get("max_position_embeddings", default)), "teacher.random_config"))
  if s.init == "random" and s.random_config:
    found.append((int(s.random_config.get("max_position_embeddings", default)), "student.random_config"))
  if "max_position_embeddings" in s.config_overrides:
    found.append((int(s.config_overrides.max_position_embeddings), "student.config_overrides"))
  return min(found) if found else None


def _model_vocab_size(config) -> Optional[int]:
  """The student's vocabulary size as config files say, or None where only the weights tell."""
  s = config.student
  if "vocab_size" in s.config_overrides:
    return int(s.config_overrides.vocab_size)
  if s.init == "random" and s.random_config:
    return int(s.random_config.get("vocab_size", models.BertConfig.vocab_size))
  if config.teacher.path:
    config_file = Path(config.teacher.path) / "config.json"
    if not config_file.is_file():
      raise errors.ConfigError(f"{config_file}: missing config file (teacher.path)")
    return json.loads(config_file.read_text()).get("vocab_size")
  if config.teacher.random_config:
    return int(config.teacher.random_config.get("vocab_size", models.BertConfig.vocab_size))
  return None


def embedded_corpus_dir(workdir) -> Path:
  """Where the generated corpus is written: WORKDIR/corpus, or with a gs:// work directory a
  local directory (the corpus is the same on every host, and its readers take local files)."""
  if storage.is_remote(workdir):
    return Path(storage.cache_root()) / "embedded_corpus"
  return Path(workdir) / "corpus"


def resolve_data(config, workdir: Path) -> tuple[list[str], str, Optional[dict]]:
  """(source specs with "embedded" replaced by the generated standard-library corpus, tokenizer
  directory, the embedded corpus's files or None). `distill` and `token-counts` both use it."""
  sources, embedded = [], None
  for spec in config.data.sources:
    if spec == "embedded":
      embedded = corpus.write_embedded_corpus(embedded_corpus_dir(workdir))
      spec = f"text:{embedded['train']}"
    sources.append(spec)
  tokenizer_dir = config.data.tokenizer_dir or config.teacher.path
  if not tokenizer_dir:
    raise errors.ConfigError("data.tokenizer_dir is empty and there is no teacher.path to take it from")
  return sources, tokenizer_dir, embedded


def build_token_cache(config, workdir: Path, expected_vocab_size: Optional[int] = None):
  """The token cache of the config's data (built once; with several processes, by process 0,
  while the others wait at a barrier; on object storage they then read only a cache that carries
  its completion marker)."""
  sources, tokenizer_dir, _ = resolve_data(config, workdir)
  d = config.data
  cache_dir = d.cache_dir or str(storage.path(workdir) / "token_cache")
  build = lambda build_here=True: token_cache.build_token_cache(
      sources, tokenizer_dir, cache_dir, max_length=d.max_length, min_length=d.min_length, pack=d.pack,
      expected_vocab_size=expected_vocab_size, build_here=build_here)
  if jax.process_count() > 1:  # one process tokenizes; the others then reuse its cache
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
      cache = build()
    multihost_utils.sync_global_devices("token_cache")
    if jax.process_index() == 0:
      return cache
    return build(build_here=not storage.is_remote(cache_dir))
  return build()


# ===================================================================================== models
def build_teacher(config, abstract: bool = False, platform: Optional[str] = None):
  """(model, params, model config) of the frozen teacher, or (None, None, None) without one.
  Parameters stay float32 here: the student copies its layers from them first. abstract: the
  model from config.json alone and its parameters as jax.ShapeDtypeStructs (nothing is read or
  allocated); platform: where the step runs ("auto" dtypes resolve for it)."""
  t = config.teacher
  dtype = models.resolve_dtype(t.dtype, platform)
  if t.path and abstract:
    model_config = convert.read_model_config(t.path, **train.compile_fields(t, platform))
    model = models.get_model(model_config, t.head, dtype=dtype)
    return model, train.abstract_params(model), model.config
  if t.path:
    model, params = convert.load_pretrained(t.path, head=t.head, dtype=dtype, **train.compile_fields(t, platform))
    return model, params, model.config
  if t.random_config:
    model_config = dataclasses.replace(models.config_from_hf_dict(dict(t.random_config)),
                                       **train.compile_fields(t, platform))
    model = models.get_model(model_config, t.head, dtype=dtype)
    params = train.abstract_params(model) if abstract else train.init_params(model, config.train.seed + 1)
    return model, params, model_config
  return None, None, None


def build_student(config, teacher_config, teacher_params, abstract: bool = False, platform: Optional[str] = None):
  """(model, float32 params, model config) of the student; abstract and platform as build_teacher's."""
  s = config.student
  head = "masked_lm" if needs_logits(config) else "base"
  fields = {**train.compile_fields(s, platform), **dict(s.config_overrides)}
  params = None
  if s.init == "teacher" and abstract:
    student_config, _ = convert.student_config_of(teacher_config, layers=tuple(s.layers) if s.layers else None,
                                                  student_type=s.type, **fields)
  elif s.init == "teacher":
    student_config, params = convert.student_from_teacher(
        teacher_config, teacher_params, teacher_head=config.teacher.head,
        layers=tuple(s.layers) if s.layers else None, student_type=s.type, student_head=head, **fields)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  else:
    hf_fields = dict(s.random_config) if s.random_config else teacher_config.to_hf_dict()
    hf_fields.update(dict(s.config_overrides))
    student_config = dataclasses.replace(models.config_from_hf_dict(hf_fields), **train.compile_fields(s, platform))
  model = models.get_model(student_config, head, dtype=models.resolve_dtype(s.dtype, platform))
  if abstract:
    params = train.abstract_params(model, jnp.float32)
  elif params is None:
    params = train.init_params(model, config.train.seed)
  return model, params, student_config


def hidden_layer_map(config, student_config, teacher_config) -> tuple:
  """(student hidden-state index, teacher hidden-state index) pairs; index 0 = embeddings."""
  if config.loss.hidden_layer_map or config.loss.alpha_hidden <= 0 or teacher_config is None:
    return losses.hidden_layer_map(config.loss.hidden_layer_map, ())
  layers = tuple(config.student.layers) or convert.default_student_layers(
      teacher_config.num_hidden_layers, student_config.num_hidden_layers)
  return losses.hidden_layer_map(config.loss.hidden_layer_map, layers)


# ===================================================================================== losses
@dataclasses.dataclass
class DistillationLoss:
  """The job's three step functions (see train.Job): masking, denominators, loss sums."""
  config: Any
  student: Any
  teacher: Any
  token_probs: Any  # [vocab] masking weights
  mask_token_id: int
  layer_map: tuple  # (student, teacher) hidden-state indices of loss_hidden
  relation_pairs: tuple = ()  # (student, teacher) 0-based layers of loss_relation
  relation_heads: int = 0

  def prepare(self, batch, rng):
    m = self.config.mask
    input_ids = batch["input_ids"].astype(jnp.int32)
    attention_mask = batch["attention_mask"]
    if m.mlm_probability <= 0:
      return dict(input_ids=input_ids, attention_mask=attention_mask, mlm_labels=input_ids,
                  mlm_weights=jnp.zeros(input_ids.shape, jnp.float32))
    token_probs = jnp.asarray(self.token_probs)
    masked = masking.mask_tokens(rng, input_ids, attention_mask, token_probs, mask_token_id=self.mask_token_id,
                                 vocab_size=token_probs.shape[0], mlm_probability=m.mlm_probability,
                                 mask_prob=m.mask_prob, random_prob=m.random_prob)
    return dict(input_ids=masked.input_ids, attention_mask=attention_mask, mlm_labels=masked.mlm_labels,
                mlm_weights=masked.mlm_weights)

  def denominators(self, batch):
    real = jnp.sum(batch["attention_mask"].astype(jnp.float32))
    masked = jnp.sum(batch["mlm_weights"])
    ce_rows = masked if self.config.loss.ce_masked_only else real
    hidden = real * self.student.config.hidden_size * max(len(self.layer_map), 1)
    relation = real * self.relation_heads * max(len(self.relation_pairs), 1)
    minilm = real * self.student.config.num_attention_heads * max(len(self.relation_pairs), 1)
    return {"ce": ce_rows, "mse": ce_rows, "mlm": masked, "cos": real, "hidden": hidden, "relation": relation,
            "attention_kl": minilm, "value_relation": minilm}

  def loss_sums(self, params, teacher_params, micro, dropout_rng):
    l = self.config.loss
    need_hidden = l.alpha_hidden > 0
    kw = dict(attention_mask=micro["attention_mask"], output_hidden_states=need_hidden,
              output_qkv=l.alpha_relation > 0 or l.alpha_attention_kl > 0 or l.alpha_value_relation > 0)
    real = micro["attention_mask"].astype(jnp.float32)
    ce_weights, labels = (micro["mlm_weights"] if l.ce_masked_only else real), micro["mlm_labels"]
    mlm_weights = micro["mlm_weights"]
    if l.logits_at_masked_only and needs_logits(self.config):
      # The masked positions first (weight 1 > 0), then filler whose weight is 0.
      cap = positions_cap(micro["input_ids"].shape, self.config)
      flat_weights = mlm_weights.reshape(-1)
      positions = jax.lax.top_k(flat_weights, cap)[1]
      kw["masked_positions"] = positions
      mlm_weights = ce_weights = flat_weights[positions]
      labels = labels.reshape(-1)[positions]
    student_out = self.student.apply({"params": params}, micro["input_ids"], deterministic=False,
                                     rngs={"dropout": dropout_rng}, **kw)
    teacher_out = None
    if self.teacher is not None:
      teacher_out = jax.lax.stop_gradient(
          self.teacher.apply({"params": teacher_params}, micro["input_ids"], deterministic=True, **kw))
    sums = {}
    if l.alpha_mlm > 0:
      sums["mlm"] = losses.masked_lm_loss(student_out.logits, labels, mlm_weights)[0]
    if teacher_out is not None:
      if l.alpha_ce > 0:
        sums["ce"] = losses.kl_div_loss(student_out.logits, teacher_out.logits, ce_weights, l.temperature)[0]
      if l.alpha_mse > 0:
        sums["mse"] = losses.mse_logits_loss(student_out.logits, teacher_out.logits, ce_weights)[0]
      if l.alpha_cos > 0:
        sums["cos"] = losses.cosine_embedding_loss(
            student_out.last_hidden_state, teacher_out.last_hidden_state, real)[0]
      if need_hidden:
        sums["hidden"] = losses.hidden_states_loss(
            student_out.hidden_states, teacher_out.hidden_states, self.layer_map, real)
      if l.alpha_relation > 0:
        sums["relation"] = sum(attention_losses.relations_loss(
            student_out.attention_qkv[s], teacher_out.attention_qkv[t], micro["attention_mask"],
            self.relation_heads)[0] for s, t in self.relation_pairs)
      sums.update(attention_losses.minilm_losses(l, student_out.attention_qkv, teacher_out.attention_qkv,
                                                 micro["attention_mask"], self.relation_pairs))
    return sums


def positions_cap(micro_shape: tuple, config) -> int:
  """The most positions the masking can choose in one micro-batch [rows, length]: the whole
  batch's ceil(mlm_probability * tokens) (masking draws over the whole batch, so one micro-batch
  may hold all of them), at most the micro-batch's own positions. With gradient accumulation the
  saving therefore shrinks: it is largest with train.grad_accum_steps = 1."""
  rows, length = micro_shape
  whole_batch = rows * config.train.grad_accum_steps * length
  return int(min(math.ceil(config.mask.mlm_probability * whole_batch), rows * length))


# ===================================================================================== parts
@dataclasses.dataclass
class ModelPair:
  """The student and the frozen teacher of a run (teacher fields None without one); parameters
  are arrays, or jax.ShapeDtypeStructs in an abstract job."""
  student: Any
  student_params: Any  # float32
  student_config: Any
  teacher: Any
  teacher_params: Any  # in the teacher's compute dtype
  teacher_config: Any


@dataclasses.dataclass
class Data:
  """What a run reads: the batches and what the masking draws from."""
  iterator: Any  # input_pipeline's batch iterator; None in an abstract job
  num_steps: int
  token_probs: Any  # [vocab] masking weights
  mask_id: int  # the [MASK] token id
  tokenizer_dir: Optional[str]  # copied into the export; None in an abstract job


def build_models(config, abstract: bool = False, platform: Optional[str] = None, teacher=None) -> ModelPair:
  """Teacher and student as build_teacher and build_student make them (abstract and platform as
  theirs); `teacher`: (model, float32 params, model config) to use instead of building one."""
  teacher, teacher_params, teacher_config = teacher or build_teacher(config, abstract=abstract, platform=platform)
  student, student_params, student_config = build_student(config, teacher_config, teacher_params, abstract=abstract,
                                                          platform=platform)
  if teacher is not None:
    # Only now (the student copied float32 layers): the frozen teacher in its compute dtype,
    # half the memory in bfloat16.
    teacher_params = jax.tree.map(lambda x: train.cast_params(x, teacher.dtype), teacher_params)
  return ModelPair(student, student_params, student_config, teacher, teacher_params, teacher_config)


def build_data(config, workdir: Path, vocab_size: int) -> Data:
  """The token cache of the config's data (its vocabulary checked against the model's
  `vocab_size`), this process's batch iterator over it and the masking weights."""
  t = config.train
  _, tokenizer_dir, _ = resolve_data(config, workdir)
  cache = build_token_cache(config, workdir, expected_vocab_size=vocab_size)
  iterator = input_pipeline.make_batch_iterator(
      cache, global_batch_size=t.batch_size, bucket_lengths=tuple(config.data.bucket_lengths),
      seed=config.data.shuffle_seed, process_index=jax.process_index(), process_count=jax.process_count())
  num_steps = t.num_steps if t.num_steps > 0 else int(math.ceil(t.num_epochs * iterator.batches_per_epoch))
  if config.mask.token_counts:
    token_probs = masking.token_probs_from_counts(np.load(config.mask.token_counts), cache.special_ids,
                                                  config.mask.smoothing)
  else:
    token_probs = masking.uniform_token_probs(cache.vocab_size, cache.special_ids)
  return Data(iterator, num_steps, token_probs, cache.mask_id, tokenizer_dir)


def abstract_data(config, vocab_size: int) -> Data:
  """The data of an ahead-of-time compile: no iterator; uniform masking weights and [MASK] id 0,
  constants of the program that change neither its shapes nor its cost."""
  num_steps = max(config.train.num_steps, 1)  # the schedule's length changes nothing compiled
  return Data(None, num_steps, masking.uniform_token_probs(vocab_size, ()), 0, None)


def build_loss(config, pair: ModelPair, token_probs, mask_id: int) -> DistillationLoss:
  """The losses of `pair` as config.loss says, masking with `token_probs` ([vocab]); a layer loss
  that does not fit the two models is a ConfigError."""
  layer_map = hidden_layer_map(config, pair.student_config, pair.teacher_config)
  if pair.teacher is None:
    return DistillationLoss(config, pair.student, pair.teacher, token_probs, mask_id, layer_map)
  _, relation_pairs, relation_heads = checks.checked_layer_pairs(config.loss, pair.student_config,
                                                                 pair.teacher_config, ())
  return DistillationLoss(config, pair.student, pair.teacher, token_probs, mask_id, layer_map, relation_pairs,
                          relation_heads)


def job_from_parts(config, pair: ModelPair, data: Data) -> train.Job:
  """The train.Job of models, data and their DistillationLoss."""
  loss = build_loss(config, pair, data.token_probs, data.mask_id)
  student_config, teacher_config = pair.student_config, pair.teacher_config
  with_logits = needs_logits(config)
  return train.Job(
      model=pair.student, params=pair.student_params, iterator=data.iterator, num_steps=data.num_steps,
      loss_weights={n: getattr(config.loss, f"alpha_{n}") for n in LOSS_NAMES},
      loss_sums=loss.loss_sums, denominators=loss.denominators, prepare=loss.prepare,
      frozen_model=pair.teacher, frozen_params=pair.teacher_params, tokenizer_dir=data.tokenizer_dir,
      export=functools.partial(convert.save_pretrained, pair.student, tokenizer_dir=data.tokenizer_dir,
                               overwrite=True, sentence_transformers_source=config.teacher.path or None),
      flops_per_token=lambda length: flops.distillation_flops_per_token(
          student_config, teacher_config, length, with_logits, with_logits),
      batch_spec=batch_spec)


# ===================================================================================== job
def make_job(config: ml_collections.ConfigDict, workdir: Path) -> train.Job:
  """Models, data and losses of a distillation (or, without a teacher, MLM pretraining)."""
  checks.check_processes(config)
  pair = build_models(config)
  return job_from_parts(config, pair, build_data(config, workdir, pair.student_config.vocab_size))


def make_abstract_job(config: ml_collections.ConfigDict, platform: str) -> train.Job:
  """The job of `make_job` for an ahead-of-time compile on `platform`: the same models, losses
  and step, from config files alone. Its parameters are jax.ShapeDtypeStructs; it has no data
  (abstract_data)."""
  checks.check_processes(config)
  pair = build_models(config, abstract=True, platform=platform)
  return job_from_parts(config, pair, abstract_data(config, pair.student_config.vocab_size))


def batch_spec(batch_size: int, length: int) -> dict:
  """The global batch of input_pipeline's iterator: token ids and attention mask, int32."""
  shape = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
  return {"input_ids": shape, "attention_mask": shape}
