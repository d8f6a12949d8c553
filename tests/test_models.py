"""models/ against transformers' PyTorch classes of the same name, on the same weights.

References: a randomly initialised `transformers` model (tiny config), its weights moved into our
parameters by convert.state_dict_to_params. Tolerances:
  float32: 5e-5 absolute on logits, hidden states and attention probabilities. transformers v5
    masks only keys, as we do, so its outputs at pad positions are well defined and agree with
    ours: every position is compared.
  bfloat16 computation (float32 or bfloat16 parameters): max |bf16 - f32| / max |f32| <= 2e-2 for
    every output of every head (relative to the largest magnitude).
  Alternative compilations (dot_product and blocked attention, scan, remat): 1e-5 absolute.
  Vocabulary projection at flat masked positions vs. everywhere: 1e-6 relative, logits and gradients.
"""
import dataclasses
import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from distilbert_jax import convert, models
from distilbert_jax.models import attention, layers

ATOL = 5e-5
VOCAB, LENGTH, BATCH = 101, 9, 3
TINY = {
    "bert": dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=24, type_vocab_size=3),
    "distilbert": dict(vocab_size=VOCAB, dim=32, n_layers=3, n_heads=4, hidden_dim=37, max_position_embeddings=24),
}
HEADS = [("bert", h) for h in models.bert.HEADS] + [("distilbert", h) for h in models.distilbert.HEADS]
HF_CLASS = {"bert": "Bert", "distilbert": "DistilBert"}
HF_SUFFIX = {"base": "Model", "masked_lm": "ForMaskedLM", "pretraining": "ForPreTraining",
             "sequence_classification": "ForSequenceClassification", "multiple_choice": "ForMultipleChoice",
             "token_classification": "ForTokenClassification", "question_answering": "ForQuestionAnswering"}


def torch_model(model_type, head, seed=0, **overrides):
  """(transformers model in eval mode, our config): a random tiny model, three labels (two, start
  and end, for question answering)."""
  torch.manual_seed(seed)
  config_cls = transformers.BertConfig if model_type == "bert" else transformers.DistilBertConfig
  num_labels = 2 if head == "question_answering" else 3
  hf_config = config_cls(**{**TINY[model_type], "num_labels": num_labels, **overrides})
  # Eager attention returns probabilities for output_attentions (SDPA does not).
  hf_config._attn_implementation = "eager"
  pt = getattr(transformers, HF_CLASS[model_type] + HF_SUFFIX[head])(hf_config).eval()
  return pt, models.config_from_hf_dict(hf_config.to_dict())


def flax_params(pt, config, head):
  state_dict = {k: v.detach().numpy() for k, v in pt.state_dict().items()}
  return convert.state_dict_to_params(state_dict, config, head)


def padded_batch(seed, model_type, head, batch=BATCH, length=LENGTH):
  """input_ids, attention_mask (right padding, left padding, different lengths), token_type_ids."""
  rs = np.random.RandomState(seed)
  shape = (batch, 2, length) if head == "multiple_choice" else (batch, length)
  ids = rs.randint(1, VOCAB, shape).astype(np.int64)
  mask = np.ones((int(np.prod(shape[:-1])), length), np.int64)
  mask[1, length - 3:] = 0  # right padding
  mask[2, :2] = 0  # left padding
  mask[0, rs.randint(3, length):] = 0  # a random length
  mask = mask.reshape(shape)
  ids = np.where(mask == 1, ids, 0)
  types = rs.randint(0, 3, shape).astype(np.int64) if model_type == "bert" else None
  return ids, mask, types


def run_both(pt, model, params, ids, mask, types, **flags):
  kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  if types is not None:
    kwargs["token_type_ids"] = torch.tensor(types)
  with torch.no_grad():
    ref = pt(**kwargs, **flags)
  ours = model.apply({"params": params}, ids, attention_mask=mask, deterministic=True, **flags,
                     **({"token_type_ids": types} if types is not None else {}))
  return ref, ours


def outputs_to_compare(head, ref, ours):
  """[(name, ours, reference)] for every output the head produces."""
  pairs = []
  if head == "base":
    pairs.append(("last_hidden_state", ours.last_hidden_state, ref.last_hidden_state))
    if getattr(ref, "pooler_output", None) is not None:
      pairs.append(("pooler_output", ours.pooler_output, ref.pooler_output))
  elif head == "pretraining":
    pairs += [("logits", ours.logits, ref.prediction_logits),
              ("seq_relationship_logits", ours.seq_relationship_logits, ref.seq_relationship_logits)]
  elif head == "question_answering":
    pairs += [("start_logits", ours.start_logits, ref.start_logits), ("end_logits", ours.end_logits, ref.end_logits)]
  else:
    pairs.append(("logits", ours.logits, ref.logits))
  if getattr(ref, "hidden_states", None) is not None:
    assert len(ours.hidden_states) == len(ref.hidden_states)
    pairs += [(f"hidden_states[{i}]", a, b) for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states))]
  if getattr(ref, "attentions", None) is not None:
    assert len(ours.attentions) == len(ref.attentions)
    pairs += [(f"attentions[{i}]", a, b) for i, (a, b) in enumerate(zip(ours.attentions, ref.attentions))]
  return pairs


def assert_close(pairs, atol=ATOL):
  for name, ours, ref in pairs:
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    assert np.shape(ours) == ref.shape, name
    np.testing.assert_allclose(np.asarray(ours, np.float32), ref, atol=atol, rtol=0, err_msg=name)


def assert_relatively_close(ours, ref, rtol, name=""):
  """max |ours - ref| <= rtol * max |ref|: relative to the largest magnitude, so near-zero
  entries are not judged on their own (all-zero references must be matched exactly)."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, name
  assert np.abs(ours - ref).max() <= rtol * np.abs(ref).max(), (name, np.abs(ours - ref).max(), np.abs(ref).max())


@pytest.mark.parametrize("model_type,head", HEADS)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_head_matches_pytorch(model_type, head, seed):
  # DistilBERT: learned positions on one seed, sinusoidal on the other.
  overrides = {"sinusoidal_pos_embds": bool(seed)} if model_type == "distilbert" else {}
  pt, config = torch_model(model_type, head, seed, **overrides)
  model = models.get_model(config, head)
  ids, mask, types = padded_batch(seed, model_type, head)
  ref, ours = run_both(pt, model, flax_params(pt, config, head), ids, mask, types,
                       output_hidden_states=True, output_attentions=True)
  assert_close(outputs_to_compare(head, ref, ours))


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("activation", sorted(layers.ACTIVATIONS))
def test_mlm_logits_match_pytorch_for_each_activation(model_type, activation):
  key = "hidden_act" if model_type == "bert" else "activation"
  pt, config = torch_model(model_type, "masked_lm", seed=3, **{key: activation})
  model = models.get_model(config, "masked_lm")
  ids, mask, types = padded_batch(3, model_type, "masked_lm")
  ref, ours = run_both(pt, model, flax_params(pt, config, "masked_lm"), ids, mask, types)
  assert_close([("logits", ours.logits, ref.logits)])


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_untied_mlm_decoder_matches_pytorch(model_type):
  pt, config = torch_model(model_type, "masked_lm", seed=4, tie_word_embeddings=False)
  assert not config.tie_word_embeddings
  model = models.get_model(config, "masked_lm")
  ids, mask, types = padded_batch(4, model_type, "masked_lm")
  ref, ours = run_both(pt, model, flax_params(pt, config, "masked_lm"), ids, mask, types)
  assert_close([("logits", ours.logits, ref.logits)])


def test_bert_position_ids_match_pytorch():
  pt, config = torch_model("bert", "base", seed=5)
  model = models.get_model(config, "base")
  ids, mask, types = padded_batch(5, "bert", "base")
  positions = np.random.RandomState(5).randint(0, 24, ids.shape)
  with torch.no_grad():
    ref = pt(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types),
             position_ids=torch.tensor(positions)).last_hidden_state.numpy()
  ours = model.apply({"params": flax_params(pt, config, "base")}, ids, mask, types, positions)
  np.testing.assert_allclose(ours.last_hidden_state, ref, atol=ATOL, rtol=0)


def random_params(model, config, head, seed=0):
  """Initialised parameters (numpy), in the layout config.scan_layers names. A scanned layout is
  initialised unrolled and stacked: eager nn.scan init costs seconds of compilation on CPU."""
  ids = jnp.ones((1, 1, 4) if head == "multiple_choice" else (1, 4), jnp.int32)
  unrolled = models.get_model(dataclasses.replace(config, scan_layers=False, remat_policy="none"), head)
  params = jax.device_get(nn.meta.unbox(unrolled.init(jax.random.PRNGKey(seed), ids)["params"]))
  return convert.stack_layers(params, config) if config.scan_layers else params


def tiny_config(model_type, **overrides):
  """Our config for the tiny model, with dataclass fields replaced."""
  return dataclasses.replace(models.config_from_hf_dict({"model_type": model_type, **TINY[model_type]}), **overrides)


def produced_outputs(out):
  """[(name, array)] of every output a head produced, hidden states and attentions included."""
  names = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits", "seq_relationship_logits")
  pairs = [(name, getattr(out, name)) for name in names if getattr(out, name) is not None]
  pairs += [(f"hidden_states[{i}]", h) for i, h in enumerate(out.hidden_states or ())]
  return pairs + [(f"attentions[{i}]", a) for i, a in enumerate(out.attentions or ())]


def apply_head(model, params, ids, mask, types, **flags):
  return model.apply({"params": params}, ids, mask, **({"token_type_ids": types} if types is not None else {}),
                     output_hidden_states=True, output_attentions=True, **flags)


@pytest.mark.parametrize("model_type,head", HEADS)
@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_bfloat16_computation_is_close_to_float32(model_type, head, param_dtype):
  config = tiny_config(model_type)
  params = random_params(models.get_model(config, head), config, head)
  ids, mask, types = padded_batch(6, model_type, head)
  f32 = apply_head(models.get_model(config, head), params, ids, mask, types)
  bf16 = apply_head(models.get_model(config, head, dtype=jnp.bfloat16, param_dtype=param_dtype),
                    jax.tree.map(lambda x: x.astype(param_dtype), params), ids, mask, types)
  pairs = list(zip(produced_outputs(bf16), produced_outputs(f32)))
  assert len(pairs) == len(produced_outputs(f32)) > 3 + 4
  for (name, ours), (_, ref) in pairs:
    assert ours.dtype == jnp.bfloat16, name
    assert_relatively_close(ours, ref, 2e-2, name)


def dot_products(jaxpr):
  """Every dot_general equation of a jaxpr, those of its inner jaxprs (scan, remat, custom_vjp)
  included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      yield eqn
    for value in eqn.params.values():
      for inner in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(inner, "jaxpr", inner)
        if hasattr(inner, "eqns"):
          yield from dot_products(inner)


@pytest.mark.parametrize("model_type,head", HEADS)
def test_every_matrix_product_multiplies_bfloat16_and_accumulates_in_float32(model_type, head):
  # Forward and backward, scanned and rematerialised. A bfloat16 -> bfloat16 product would run
  # on XLA:CPU's float32 path; a float32 operand in the backward pass would too.
  config = tiny_config(model_type, scan_layers=True, remat_policy="dots")
  model = models.get_model(config, head, dtype=jnp.bfloat16)
  params = random_params(model, config, head)
  ids, mask, types = padded_batch(6, model_type, head)

  def loss(p):
    out = apply_head(model, p, ids, mask, types)
    return sum(jnp.sum(x.astype(jnp.float32)) for _, x in produced_outputs(out))

  forward = list(dot_products(jax.make_jaxpr(loss)(params).jaxpr))
  both = list(dot_products(jax.make_jaxpr(jax.grad(loss))(params).jaxpr))
  assert len(both) > len(forward) >= 4  # q, k, v, scores, ...
  for eqn in both:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
    assert eqn.params["preferred_element_type"] == jnp.float32, eqn


def test_resolve_dtype_picks_bfloat16_only_where_it_is_fast(monkeypatch):
  assert models.resolve_dtype("float32") == jnp.float32 and models.resolve_dtype("bfloat16") == jnp.bfloat16
  assert models.resolve_dtype("auto", backend="gpu") == models.resolve_dtype("auto", backend="tpu") == jnp.bfloat16
  zen4 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n"
  sapphire_rapids = "flags\t\t: fpu avx512f amx_bf16 amx_tile\n"
  skylake = "flags\t\t: fpu avx512f avx512bw\nbugs\t\t: avx512_bf16_is_not_a_flag_here\n"
  for cpuinfo, native in ((zen4, True), (sapphire_rapids, True), (skylake, False)):
    monkeypatch.setattr(models, "_read_cpuinfo", lambda: cpuinfo)
    assert models.cpu_has_native_bfloat16() is native
    assert models.resolve_dtype("auto", backend="cpu") == (jnp.bfloat16 if native else jnp.float32)

  def unreadable():
    raise FileNotFoundError("/proc/cpuinfo")
  monkeypatch.setattr(models, "_read_cpuinfo", unreadable)
  assert models.cpu_has_native_bfloat16() is False
  assert models.resolve_dtype("auto", backend="cpu") == jnp.float32
  assert models.resolve_dtype("auto", backend="gpu") == jnp.bfloat16  # the processor does not matter there


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_dot_product_attention_matches_xla(model_type):
  config = tiny_config(model_type)
  params = random_params(models.get_model(config, "masked_lm"), config, "masked_lm")
  ids, mask, _ = padded_batch(7, model_type, "masked_lm")
  outputs = [models.get_model(tiny_config(model_type, attention_impl=impl), "masked_lm").apply(
      {"params": params}, ids, mask, output_hidden_states=True) for impl in ("xla", "dot_product")]
  np.testing.assert_allclose(outputs[1].logits, outputs[0].logits, atol=1e-5, rtol=0)
  for a, b in zip(outputs[1].hidden_states, outputs[0].hidden_states):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_blocked_attention_matches_xla(model_type, monkeypatch):
  # Blocks of 4 keys: sequences of 9 take three blocks, the last filled up; a padded row and
  # the fully masked one below included. 1e-5 absolute (float32), outputs and gradients.
  monkeypatch.setattr(attention, "ATTENTION_BLOCK", 4)
  config = tiny_config(model_type)
  params = random_params(models.get_model(config, "masked_lm"), config, "masked_lm")
  ids, mask, _ = padded_batch(12, model_type, "masked_lm")
  mask[1] = 0
  results = [_outputs_and_grads(models.get_model(tiny_config(model_type, attention_impl=impl), "masked_lm"),
                                params, ids, mask, output_attentions=False) for impl in ("xla", "blocked")]
  (_, outputs), grads = results[0]
  (_, outputs2), grads2 = results[1]
  for a, b in zip(outputs2, outputs):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), grads2, grads)


def _outputs_and_grads(model, params, ids, mask, output_attentions=True):
  """(loss, (logits, hidden states, attentions)), gradients of a loss that touches every output."""
  def loss(p):
    out = model.apply({"params": p}, ids, mask, output_hidden_states=True, output_attentions=output_attentions)
    extra = out.hidden_states + (out.attentions or ())
    return jnp.mean(out.logits ** 2) + sum(jnp.mean(h ** 3) for h in extra), (out.logits,) + extra
  return jax.value_and_grad(loss, has_aux=True)(params)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("scan_layers,remat_policy", [(True, "none"), (False, "full"), (True, "dots")])
def test_scan_and_remat_match_the_plain_stack(model_type, scan_layers, remat_policy):
  plain_config = tiny_config(model_type)
  params = random_params(models.get_model(plain_config, "masked_lm"), plain_config, "masked_lm")
  config = tiny_config(model_type, scan_layers=scan_layers, remat_policy=remat_policy)
  moved = convert.stack_layers(params, config) if scan_layers else params
  ids, mask, _ = padded_batch(8, model_type, "masked_lm")
  (loss, outputs), grads = _outputs_and_grads(models.get_model(plain_config, "masked_lm"), params, ids, mask)
  (loss2, outputs2), grads2 = _outputs_and_grads(models.get_model(config, "masked_lm"), moved, ids, mask)
  np.testing.assert_allclose(loss2, loss, atol=1e-5, rtol=0)
  assert len(outputs2) == len(outputs) == 1 + 4 + 3  # logits, embeddings + 3 layers, 3 attention maps
  for a, b in zip(outputs2, outputs):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
  grads2 = convert.unstack_layers(grads2, config)
  assert jax.tree.structure(grads2) == jax.tree.structure(grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), grads2, grads)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_stack_and_unstack_layers_are_inverse_and_give_the_scanned_tree(model_type):
  config = tiny_config(model_type, scan_layers=True)
  model = models.get_model(config, "masked_lm")
  scanned_shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32)))
  unrolled = random_params(model, tiny_config(model_type), "masked_lm")
  scanned = convert.stack_layers(unrolled, config)
  assert jax.tree.map(np.shape, scanned) == jax.tree.map(lambda x: x.shape, scanned_shapes["params"])
  assert_trees_equal(convert.stack_layers(flax.core.freeze(unrolled), config), scanned)  # FrozenDicts too
  assert_trees_equal(convert.unstack_layers(scanned, config), unrolled)
  # Either direction is a no-op on parameters already in that layout.
  assert_trees_equal(convert.stack_layers(scanned, config), scanned)
  assert_trees_equal(convert.unstack_layers(unrolled, config), unrolled)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_masked_positions_equal_gathered_full_logits(model_type):
  config = tiny_config(model_type)
  model = models.get_model(config, "masked_lm")
  params = random_params(model, config, "masked_lm")
  ids, mask, _ = padded_batch(9, model_type, "masked_lm")
  positions = np.array([[0, 3, 5], [8, 1, 1], [2, 7, 4]])
  full = model.apply({"params": params}, ids, mask).logits
  picked = model.apply({"params": params}, ids, mask, masked_positions=positions).logits
  np.testing.assert_allclose(picked, np.take_along_axis(np.asarray(full), positions[..., None], axis=1),
                             atol=1e-6, rtol=0)


MLM_HEADS = [("bert", "masked_lm"), ("bert", "pretraining"), ("distilbert", "masked_lm")]


@pytest.mark.parametrize("model_type,head", MLM_HEADS)
def test_flat_masked_positions_give_the_full_logits_and_gradients_there(model_type, head):
  # Flat indices into batch * length: rows of every sequence, out of order, one repeated, one
  # at a padded position. Tolerance 1e-6 relative (float32): the projection runs on 8 rows
  # instead of 27, so matrix products may sum in another order.
  config = tiny_config(model_type)
  model = models.get_model(config, head)
  params = random_params(model, config, head, seed=11)
  ids, mask, types = padded_batch(11, model_type, head)
  inputs = dict(attention_mask=mask, **({"token_type_ids": types} if types is not None else {}))
  flat = np.array([0, 5, 9, 13, 26, 19, 2, 13])
  assert mask.reshape(-1)[flat].min() == 0
  full = model.apply({"params": params}, ids, **inputs)
  picked = model.apply({"params": params}, ids, masked_positions=flat, **inputs)
  assert picked.logits.shape == (len(flat), VOCAB)
  assert_relatively_close(picked.logits, np.asarray(full.logits).reshape(-1, VOCAB)[flat], 1e-6)
  if head == "pretraining":
    np.testing.assert_array_equal(picked.seq_relationship_logits, full.seq_relationship_logits)

  weights = np.random.RandomState(11).randn(len(flat), VOCAB).astype(np.float32)
  dense_weights = np.zeros((BATCH * LENGTH, VOCAB), np.float32)
  np.add.at(dense_weights, flat, weights)  # a repeated position counts twice in both losses
  dense_weights = dense_weights.reshape(BATCH, LENGTH, VOCAB)
  gathered_loss = lambda p: jnp.sum(model.apply({"params": p}, ids, masked_positions=flat, **inputs).logits * weights)
  full_loss = lambda p: jnp.sum(model.apply({"params": p}, ids, **inputs).logits * dense_weights)
  got, expected = jax.grad(gathered_loss)(params), jax.grad(full_loss)(params)
  largest = max(np.abs(b).max() for b in jax.tree.leaves(expected))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected)):
    if np.abs(b).max() < 1e-9 * largest:
      # The key bias: zero in exact arithmetic (softmax ignores a shift shared by every key), so
      # only rounding is left; it is held to the largest gradient entry instead of its own.
      assert np.abs(np.asarray(a) - b).max() <= 1e-6 * largest, jax.tree_util.keystr(path)
    else:
      assert_relatively_close(a, b, 1e-6, jax.tree_util.keystr(path))


def test_masked_positions_are_refused_by_heads_without_a_vocabulary_projection():
  config = tiny_config("distilbert")
  model = models.get_model(config, "token_classification")
  params = random_params(model, config, "token_classification")
  with pytest.raises(ValueError, match="takes no masked_positions"):
    model.apply({"params": params}, np.ones((2, 4), np.int32), masked_positions=np.array([0, 1]))


def test_pretraining_outputs_answer_to_the_names_of_transformers():
  # Code ported from transformers' BertForPreTraining reads prediction_logits and
  # seq_relationship_logits; `logits` is the same array under our uniform name.
  pt, config = torch_model("bert", "pretraining", seed=2)
  model = models.get_model(config, "pretraining")
  ids, mask, types = padded_batch(2, "bert", "pretraining")
  ref, ours = run_both(pt, model, flax_params(pt, config, "pretraining"), ids, mask, types)
  assert set(ref.keys()) == {"prediction_logits", "seq_relationship_logits"}
  assert_close([(name, getattr(ours, name), ref[name]) for name in ref.keys()])
  assert ours.prediction_logits is ours.logits


def test_dropout_is_active_only_in_training():
  # Scanned, the riskiest case: each layer must draw its own masks (split_rngs) and see the flag.
  config = tiny_config("distilbert", scan_layers=True)
  params = random_params(models.get_model(config, "masked_lm"), config, "masked_lm")
  ids, mask, _ = padded_batch(10, "distilbert", "masked_lm")

  @functools.partial(jax.jit, static_argnums=1)
  def train_logits(seed, dropout: float):
    model = models.get_model(dataclasses.replace(config, dropout=dropout, attention_dropout=dropout), "masked_lm")
    return model.apply({"params": params}, ids, mask, deterministic=False,
                       rngs={"dropout": jax.random.PRNGKey(seed)}).logits

  assert np.array_equal(train_logits(0, 0.1), train_logits(0, 0.1))
  assert not np.allclose(train_logits(0, 0.1), train_logits(1, 0.1))
  eval_logits = models.get_model(config, "masked_lm").apply({"params": params}, ids, mask).logits
  np.testing.assert_allclose(train_logits(0, 0.0), eval_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type,expected", [("distilbert", 66_985_530), ("bert", 109_514_298)])
def test_default_mlm_parameter_counts_equal_hugging_face(model_type, expected):
  # transformers' sum(p.numel() for p in model.parameters()) for Bert/DistilBertForMaskedLM with
  # default configs (tied decoder counted once).
  model = models.get_model(models.CONFIGS[model_type](), "masked_lm")
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 8), jnp.int32))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == expected


@pytest.mark.parametrize("model_type,head", HEADS)
@pytest.mark.parametrize("scan_layers", [False, True])
def test_every_parameter_has_logical_axis_names(model_type, head, scan_layers):
  config = tiny_config(model_type, scan_layers=scan_layers)
  model = models.get_model(config, head)
  ids = jnp.ones((1, 1, 4) if head == "multiple_choice" else (1, 4), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids)
  specs = nn.get_partition_spec(variables)["params"]
  leaves = jax.tree.leaves(nn.meta.unbox(variables["params"]))
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert len(spec_leaves) == len(leaves)
  for spec, leaf in zip(spec_leaves, leaves):
    assert len(spec) == len(leaf.shape) and all(isinstance(name, str) for name in spec), (spec, leaf.shape)
    if scan_layers and len(leaf.shape) >= 2 and spec[0] == "layers":
      assert leaf.shape[0] == config.num_hidden_layers


def test_sinusoidal_table_equals_pytorch():
  from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings
  out = torch.empty(40, 32)
  create_sinusoidal_embeddings(40, 32, out)
  np.testing.assert_array_equal(layers.sinusoidal_position_table(40, 32), out.numpy())


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_mlm_gradients_match_pytorch_autograd(model_type):
  # The tied vocabulary projection has a hand-written backward pass (matmul.tied_projection):
  # every parameter's gradient, the shared embedding matrix and the output bias included, is
  # held against torch.autograd on the same weights. Loss: sum(c * logits) for a fixed random c.
  pt, config = torch_model(model_type, "masked_lm", seed=3)
  model = models.get_model(config, "masked_lm")
  ids, mask, types = padded_batch(3, model_type, "masked_lm")
  weights = np.random.RandomState(4).randn(BATCH, LENGTH, VOCAB).astype(np.float32)
  kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  if types is not None:
    kwargs["token_type_ids"] = torch.tensor(types)
  (pt(**kwargs).logits * torch.tensor(weights)).sum().backward()
  expected = {name: p.grad.numpy() for name, p in pt.named_parameters()}

  def loss(params):
    out = model.apply({"params": params}, ids, attention_mask=mask,
                      **({"token_type_ids": types} if types is not None else {}))
    return jnp.sum(out.logits * weights)

  grads = jax.grad(loss)(flax_params(pt, config, "masked_lm"))
  got = convert.params_to_state_dict(grads, config, "masked_lm")
  assert set(got) == set(expected), set(got) ^ set(expected)
  for name, value in expected.items():
    scale = max(1.0, float(np.abs(value).max()))
    np.testing.assert_allclose(got[name], value, atol=5e-5 * scale, rtol=0, err_msg=name)


def test_cpu_compiler_options_take_the_library_fusions_out_and_keep_the_outputs():
  # models.compiler_options() must still name an option this jaxlib honours: the default CPU
  # compilation has YNNPACK fusions, ours has none, and both give the same hidden states.
  assert models.compiler_options(backend="gpu") == {} and models.compiler_options(backend="tpu") == {}
  assert models.compiler_options("masked_lm", backend="cpu") == {}  # the vocabulary product needs YNNPACK
  config = models.DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, hidden_dim=256,
                                   max_position_embeddings=24)
  model = models.get_model(config, "base")
  ids = np.random.RandomState(0).randint(1, VOCAB, (4, 16))
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])
  forward = lambda p, i: model.apply({"params": p}, i).last_hidden_state
  default = jax.jit(forward).lower(params, ids).compile()
  ours = jax.jit(forward, compiler_options=models.compiler_options("base", backend="cpu")).lower(params, ids).compile()
  assert "__ynn_fusion" in default.as_text()
  assert "__ynn_fusion" not in ours.as_text()
  np.testing.assert_allclose(np.asarray(ours(params, ids)), np.asarray(default(params, ids)), atol=1e-5, rtol=0)
  # bfloat16: XLA's defaults for inference; for training, YNNPACK fusing every matrix product,
  # the only setting whose bfloat16 backward runs on CPU (the others stop with UNIMPLEMENTED).
  assert models.compiler_options("base", backend="cpu", dtype=jnp.bfloat16) == {}
  assert models.compiler_options("masked_lm", backend="cpu", dtype=jnp.bfloat16) == {}
  bf16 = models.get_model(config, "base", dtype=jnp.bfloat16)
  mask = np.ones_like(ids)
  loss = lambda p, i: jnp.sum(bf16.apply({"params": p}, i, attention_mask=mask).last_hidden_state.astype(jnp.float32) ** 2)
  options = models.compiler_options("base", backend="cpu", dtype=jnp.bfloat16, training=True)
  ours = jax.jit(jax.grad(loss), compiler_options=options).lower(params, ids).compile()
  assert "__ynn_fusion" in ours.as_text()
  grads, grads32 = ours(params, ids), jax.grad(
      lambda p, i: jnp.sum(model.apply({"params": p}, i, attention_mask=mask).last_hidden_state ** 2))(params, ids)
  flat = lambda tree: np.concatenate([np.ravel(np.asarray(x, np.float32)) for x in jax.tree.leaves(tree)])
  assert_relatively_close(flat(grads), flat(grads32), 5e-2)  # bfloat16 against float32 gradients
  forward = lambda p, i: bf16.apply({"params": p}, i).last_hidden_state
  default = jax.jit(forward).lower(params, ids).compile()
  ours = jax.jit(forward, compiler_options=models.compiler_options("base", backend="cpu", dtype=jnp.bfloat16)
                 ).lower(params, ids).compile()
  assert_relatively_close(ours(params, ids), default(params, ids), 2e-2)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_every_length_up_to_the_position_table_is_finite_and_longer_inputs_are_refused(model_type):
  # Past the table JAX's gather returns NaN (PyTorch raises): refused rather than silently NaN.
  pt, config = torch_model(model_type, "sequence_classification")
  model = models.get_model(config, "sequence_classification")
  params = flax_params(pt, config, "sequence_classification")
  positions = config.max_position_embeddings
  for length in (1, 2, positions // 2, positions - 1, positions):  # the ends and the middle of the allowed range
    ids, mask, types = padded_batch(length, model_type, "sequence_classification", length=max(length, 4))
    ids, mask = ids[:, :length], np.ones((BATCH, length), np.int64)
    ref, ours = run_both(pt, model, params, ids, mask, None if types is None else types[:, :length])
    assert np.isfinite(np.asarray(ours.logits)).all(), length
    assert_close([("logits", ours.logits, ref.logits)])
  with pytest.raises(ValueError, match=f"inputs of {positions + 1} tokens are longer than max_position_embeddings="
                                       f"{positions}; truncate them"):
    model.apply({"params": params}, np.ones((1, positions + 1), np.int32))


def test_mini_lm_is_finite_at_512_tokens_and_refuses_600(minilm):
  model, params = convert.load_pretrained(minilm, head="base")
  ids = np.random.RandomState(0).randint(1000, 30000, (1, 512))
  hidden = model.apply({"params": params}, ids).last_hidden_state
  assert hidden.shape == (1, 512, 384) and np.isfinite(np.asarray(hidden)).all()
  with pytest.raises(ValueError, match="inputs of 600 tokens are longer than max_position_embeddings=512"):
    model.apply({"params": params}, np.ones((1, 600), np.int32))
