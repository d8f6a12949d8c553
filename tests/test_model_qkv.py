"""The models' opt-in per-layer query, key and value (output_qkv=True, ModelOutput.attention_qkv),
which the attention and relation losses read, against transformers PyTorch on a tiny random model.

References: the outputs of the query/key/value (q_lin/k_lin/v_lin) Linear modules of the same
transformers model, caught by forward hooks, and its eager output_attentions probabilities.
Tolerances: 5e-5 absolute (float32), as tests/test_models.py; probabilities recomputed from our
query and key: 5e-5 absolute; scanned and rematerialised stacks against the plain one: 1e-6.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from distilbert_jax import attention_losses, convert, models
from test_models import ATOL, flax_params, padded_batch, random_params, tiny_config, torch_model

PROJECTIONS = {"bert": ("query", "key", "value"), "distilbert": ("q_lin", "k_lin", "v_lin")}


def torch_projections(pt, model_type, ids, mask, types):
  """(per-layer [(query, key, value)] [batch, length, hidden] numpy, attention probabilities)."""
  caught = {}
  hooks = []
  for name, module in pt.named_modules():
    if name.split(".")[-1] in PROJECTIONS[model_type]:
      hooks.append(module.register_forward_hook(
          lambda m, args, out, name=name: caught.__setitem__(name, out.detach().numpy())))
  kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  if types is not None:
    kwargs["token_type_ids"] = torch.tensor(types)
  with torch.no_grad():
    out = pt(**kwargs, output_attentions=True)
  for hook in hooks:
    hook.remove()
  layers = sorted({int(n.split("layer.")[1].split(".")[0]) for n in caught})
  per_layer = [tuple(caught[next(n for n in caught if f"layer.{i}." in n and n.endswith(p))]
                     for p in PROJECTIONS[model_type]) for i in layers]
  return per_layer, [a.numpy() for a in out.attentions]


@pytest.mark.parametrize("model_type,head", [("bert", "base"), ("distilbert", "base"),
                                             ("bert", "sequence_classification"),
                                             ("distilbert", "question_answering")])
def test_query_key_value_match_pytorch_projections_and_give_its_probabilities(model_type, head):
  pt, config = torch_model(model_type, head, seed=20)
  ids, mask, types = padded_batch(20, model_type, head)
  model = models.get_model(config, head)
  kwargs = {"token_type_ids": types} if types is not None else {}
  ours = model.apply({"params": flax_params(pt, config, head)}, ids, attention_mask=mask, output_qkv=True, **kwargs)
  ref_qkv, ref_probs = torch_projections(pt, model_type, ids, mask, types)
  assert len(ours.attention_qkv) == config.num_hidden_layers == len(ref_qkv)
  heads = config.num_attention_heads if model_type == "bert" else config.n_heads
  for layer, (triple, ref_triple, probs) in enumerate(zip(ours.attention_qkv, ref_qkv, ref_probs)):
    for name, x, ref in zip("qkv", triple, ref_triple):
      assert x.shape == (ids.shape[0], ids.shape[1], heads, config.hidden_size // heads), (layer, name)
      np.testing.assert_allclose(np.asarray(x).reshape(ref.shape), ref, atol=ATOL, rtol=0, err_msg=f"{layer} {name}")
    # The probabilities the losses compute from query and key are PyTorch's attentions.
    q, k = triple[0], triple[1]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    ours_probs = jax.nn.softmax(jnp.where(mask[:, None, None, :] == 1, scores, attention_losses.MASKED_SCORE), -1)
    np.testing.assert_allclose(np.asarray(ours_probs), probs, atol=ATOL, rtol=0, err_msg=f"probs {layer}")


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_qkv_are_off_by_default_and_leave_every_other_output_unchanged(model_type):
  config = tiny_config(model_type)
  model = models.get_model(config, "masked_lm")
  params = random_params(model, config, "masked_lm")
  ids, mask, _ = padded_batch(21, model_type, "masked_lm")
  plain = model.apply({"params": params}, ids, mask, output_hidden_states=True, output_attentions=True)
  with_qkv = model.apply({"params": params}, ids, mask, output_hidden_states=True, output_attentions=True,
                         output_qkv=True)
  assert plain.attention_qkv is None and len(with_qkv.attention_qkv) == config.num_hidden_layers
  for a, b in zip(jax.tree.leaves((plain.logits, plain.hidden_states, plain.attentions)),
                  jax.tree.leaves((with_qkv.logits, with_qkv.hidden_states, with_qkv.attentions))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("scan_layers,remat_policy", [(True, "none"), (False, "full"), (True, "dots")])
def test_scanned_and_rematerialised_stacks_give_the_same_qkv(model_type, scan_layers, remat_policy):
  plain_config = tiny_config(model_type)
  params = random_params(models.get_model(plain_config, "base"), plain_config, "base")
  config = tiny_config(model_type, scan_layers=scan_layers, remat_policy=remat_policy)
  # The same weights, stacked on the layers axis when scanned.
  layout = convert.stack_layers(params, config) if scan_layers else params
  ids, mask, _ = padded_batch(22, model_type, "base")
  plain = models.get_model(plain_config, "base").apply({"params": params}, ids, mask, output_qkv=True)
  other = models.get_model(config, "base").apply({"params": layout}, ids, mask, output_qkv=True)
  for a, b in zip(jax.tree.leaves(plain.attention_qkv), jax.tree.leaves(other.attention_qkv)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  # The qkv output also differentiates through the remat and scan boundaries.
  grad = jax.grad(lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(models.get_model(config, "base").apply(
      {"params": p}, ids, mask, output_qkv=True).attention_qkv)))(layout)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
