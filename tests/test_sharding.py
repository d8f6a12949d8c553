"""Mesh construction and logical-axis shardings, on 8 fake CPU devices (see conftest.py)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from distilbert_jax import models, sharding


def test_make_mesh_fills_the_minus_one_axis_with_the_remaining_devices():
  assert dict(sharding.make_mesh(-1, 2, 2).shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert dict(sharding.make_mesh(1, -1, 1).shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  assert dict(sharding.make_mesh().shape) == {"data": 8, "fsdp": 1, "tensor": 1}
  assert sharding.make_mesh(1, 1, 1).devices.size == 1


@pytest.mark.parametrize("sizes", [(16, 1, 1), (-1, -1, 1), (-1, 3, 1)])
def test_make_mesh_rejects_sizes_that_do_not_fit_the_devices(sizes):
  with pytest.raises(ValueError, match="devices|at most one"):
    sharding.make_mesh(*sizes)


def test_logical_spec_replicates_indivisible_dims_and_uses_each_mesh_axis_once():
  mesh = sharding.make_mesh(2, 2, 2)
  # 30,522 rows divide by 2 tensor devices; 30,521 do not and are replicated.
  assert sharding.logical_to_mesh_spec(("vocab", "embed"), (30522, 64), mesh) == P("tensor", "fsdp")
  assert sharding.logical_to_mesh_spec(("vocab", "embed"), (30521, 64), mesh) == P(None, "fsdp")
  # heads and mlp both map to tensor: only the first use shards.
  assert sharding.logical_to_mesh_spec(("heads", "mlp"), (64, 64), mesh) == P("tensor", None)
  # Axes of size 1 are dropped: nothing to shard over.
  assert sharding.logical_to_mesh_spec(("embed",), (64,), sharding.make_mesh(8, 1, 1)) == P(None)


def test_every_distilbert_parameter_gets_a_sharding_and_large_ones_are_split():
  mesh = sharding.make_mesh(2, 2, 2)
  config = models.DistilBertConfig(vocab_size=128, dim=32, hidden_dim=64, n_heads=4, n_layers=2, scan_layers=True)
  model = models.get_model(config, "masked_lm")
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 8), jnp.int32))["params"]
  shardings = sharding.param_shardings(boxed, mesh)
  flat = {jax.tree_util.keystr(k): s for k, s in jax.tree_util.tree_flatten_with_path(shardings)[0]}
  assert len(flat) == len(jax.tree.leaves(nn.meta.unbox(boxed)))
  lin1 = next(v for k, v in flat.items() if "lin1" in k and "kernel" in k)
  assert lin1.spec == P(None, "fsdp", "tensor")  # [layers, embed, mlp]
  words = next(v for k, v in flat.items() if "word_embeddings" in k)
  assert words.spec == P("tensor", "fsdp")


def test_opt_state_is_sharded_like_the_parameters_it_mirrors():
  mesh = sharding.make_mesh(1, 4, 2)
  config = models.BertConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                             num_hidden_layers=2)
  model = models.get_model(config, "base")
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 8), jnp.int32))["params"]
  shardings = sharding.param_shardings(boxed, mesh)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  abstract = jax.eval_shape(tx.init, nn.meta.unbox(boxed))
  opt_shardings = sharding.opt_state_shardings(tx, abstract, shardings, mesh)
  adam = opt_shardings[1][0]
  assert jax.tree.structure(adam.mu) == jax.tree.structure(shardings)
  assert all(a == b for a, b in zip(jax.tree.leaves(adam.mu), jax.tree.leaves(shardings)))
  assert adam.count.spec == P()
  # The state can be placed with these shardings.
  state = jax.jit(tx.init, out_shardings=opt_shardings)(nn.meta.unbox(jax.jit(model.init)(
      jax.random.PRNGKey(0), jnp.ones((1, 8), jnp.int32))["params"]))
  assert jax.tree.leaves(state)[-1].sharding.is_equivalent_to(jax.tree.leaves(opt_shardings)[-1], 2)


def test_global_batch_from_local_splits_rows_over_data_and_fsdp():
  mesh = sharding.make_mesh(2, 2, 2)
  local = {"input_ids": np.arange(8 * 4, dtype=np.int32).reshape(8, 4)}
  batch = sharding.global_batch_from_local(local, mesh)
  assert batch["input_ids"].sharding.spec == P(("data", "fsdp"))
  np.testing.assert_array_equal(np.asarray(batch["input_ids"]), local["input_ids"])
  assert {s.data.shape for s in batch["input_ids"].addressable_shards} == {(2, 4)}
