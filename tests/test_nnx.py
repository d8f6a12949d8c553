"""Our Linen models used from Flax NNX through `nnx.bridge.ToNNX` (the example in docs/models.md).

References: the Linen model's own `apply` on the same parameters, transformers PyTorch on the real
all-MiniLM-L6-v2 checkpoint, and jax.value_and_grad of the Linen apply. Tolerances:
  NNX call vs. Linen apply: exact when both run eagerly (the same function on the same arrays);
    1e-6 absolute between nnx.jit and jax.jit (eager and compiled differ by about 1e-6 anyway).
  vs. transformers PyTorch: 5e-5 absolute on last_hidden_state and pooler_output, as
    tests/test_models.py.
  distillation loss and gradient through NNX vs. jax.value_and_grad of the Linen apply, both
    compiled: 1e-6 absolute on the loss; every gradient entry within 1e-5 times the largest
    gradient entry of the model.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from flax import nnx, traverse_util

from distilbert_jax import convert, losses

ATOL_PYTORCH = 5e-5
ATOL_JIT = 1e-6
GRAD_RTOL = 1e-5
SENTENCES = ["A man is playing a guitar.", "The new movie is awesome, and so is the soundtrack we heard."]


def wrap(model, params, example_ids, example_mask, rngs):
  """The recipe of docs/models.md: ToNNX, lazy_init on example inputs, then our parameters in."""
  nnx_model = nnx.bridge.ToNNX(model, rngs=rngs)
  # Our parameters carry logical axis names; without a mesh there is nothing to place them on.
  with nnx.use_eager_sharding(False):
    nnx_model.lazy_init(example_ids, attention_mask=example_mask, deterministic=True)
  nnx.update(nnx_model, params)
  return nnx_model


def param_dict(nnx_model):
  """{path tuple: numpy array} of the wrapped module's nnx.Param variables."""
  return {path: np.asarray(variable[...]) for path, variable in nnx.to_flat_state(nnx.state(nnx_model, nnx.Param))}


@pytest.fixture(scope="module")
def minilm_batch(minilm):
  tokenizer = transformers.AutoTokenizer.from_pretrained(minilm)
  batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
  return batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)


def test_wrapped_minilm_equals_linen_apply_and_pytorch(minilm, minilm_batch):
  ids, mask = minilm_batch
  model, params = convert.load_pretrained(minilm, head="base")
  nnx_model = wrap(model, params, ids, mask, nnx.Rngs(0))

  # Every parameter of the wrapped module is ours, under the same path, with its logical axes kept.
  ours = traverse_util.flatten_dict(params)
  inside = param_dict(nnx_model)
  assert inside.keys() == ours.keys()
  for path, value in ours.items():
    np.testing.assert_array_equal(inside[path], value, err_msg=str(path))
  kernel = nnx.state(nnx_model, nnx.Param)["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
  assert kernel.get_metadata()["out_sharding"] == ("embed", "heads")

  linen = model.apply({"params": params}, ids, attention_mask=mask, deterministic=True)
  eager = nnx_model(ids, attention_mask=mask, deterministic=True)
  for name in ("last_hidden_state", "pooler_output"):
    np.testing.assert_array_equal(np.asarray(getattr(eager, name)), np.asarray(getattr(linen, name)), err_msg=name)

  jitted = nnx.jit(lambda m, i, a: m(i, attention_mask=a, deterministic=True))(nnx_model, ids, mask)
  linen_jitted = jax.jit(lambda p, i, a: model.apply({"params": p}, i, attention_mask=a))(params, ids, mask)
  np.testing.assert_allclose(np.asarray(jitted.last_hidden_state), np.asarray(linen_jitted.last_hidden_state),
                             atol=ATOL_JIT, rtol=0)

  pt = transformers.BertModel.from_pretrained(minilm).eval()
  with torch.no_grad():
    ref = pt(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long))
  for name in ("last_hidden_state", "pooler_output"):
    np.testing.assert_allclose(np.asarray(getattr(eager, name)), getattr(ref, name).numpy(),
                               atol=ATOL_PYTORCH, rtol=0, err_msg=name)


@pytest.fixture(scope="module")
def tiny_mlm_pair(tmp_path_factory):
  """(teacher, student) Hugging Face directories: a random 2-layer BERT and a random 2-layer
  DistilBERT masked LM on the same 101-token vocabulary."""
  torch.manual_seed(0)
  teacher_dir, student_dir = tmp_path_factory.mktemp("nnx_teacher"), tmp_path_factory.mktemp("nnx_student")
  transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
      max_position_embeddings=24)).save_pretrained(teacher_dir)
  transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(
      vocab_size=101, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=24,
      dropout=0.1, attention_dropout=0.1)).save_pretrained(student_dir)
  return str(teacher_dir), str(student_dir)


def tiny_batch():
  """input_ids, attention_mask: [4, 12], the last two rows right-padded."""
  rs = np.random.RandomState(0)
  ids = rs.randint(1, 101, (4, 12)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[2, 9:] = 0
  mask[3, 5:] = 0
  return np.where(mask == 1, ids, 0), mask


def distillation_loss(student_logits, teacher_logits, mask):
  """Logit distillation, as losses.kl_div_loss at temperature 2 over the real tokens."""
  total, denominator = losses.kl_div_loss(student_logits, jax.lax.stop_gradient(teacher_logits),
                                          mask.astype(jnp.float32), temperature=2.0)
  return total / denominator


def test_optimizer_steps_distil_a_wrapped_student(tiny_mlm_pair):
  teacher_dir, student_dir = tiny_mlm_pair
  ids, mask = tiny_batch()
  teacher_model, teacher_params = convert.load_pretrained(teacher_dir, head="masked_lm")
  student_model, student_params = convert.load_pretrained(student_dir, head="masked_lm")
  teacher = wrap(teacher_model, teacher_params, ids, mask, nnx.Rngs(0))
  student = wrap(student_model, student_params, ids, mask, nnx.Rngs(params=0, dropout=1))
  tx = optax.adamw(1e-2)
  optimizer = nnx.Optimizer(student, tx, wrt=nnx.Param)

  @nnx.jit
  def train_step(student, teacher, optimizer, ids, mask):
    teacher_logits = teacher(ids, attention_mask=mask, deterministic=True).logits

    def loss_fn(student):
      return distillation_loss(student(ids, attention_mask=mask, deterministic=True).logits, teacher_logits, mask)
    loss, grads = nnx.value_and_grad(loss_fn)(student)
    optimizer.update(student, grads)
    return loss, grads

  # The first step's loss and gradient against the same computation on the Linen parameters in plain JAX.
  teacher_logits = teacher_model.apply({"params": teacher_params}, ids, attention_mask=mask).logits

  @jax.jit
  def linen_value_and_grad(params):
    return jax.value_and_grad(lambda p: distillation_loss(
        student_model.apply({"params": p}, ids, attention_mask=mask).logits, teacher_logits, mask))(params)
  linen_value, linen_grads = linen_value_and_grad(student_params)

  before = param_dict(student)
  teacher_before = param_dict(teacher)
  nnx_value, nnx_grads = train_step(student, teacher, optimizer, ids, mask)
  np.testing.assert_allclose(float(nnx_value), float(linen_value), atol=ATOL_JIT, rtol=0)
  nnx_grads = {path: np.asarray(g[...]) for path, g in nnx.to_flat_state(nnx_grads)}
  linen_grads = traverse_util.flatten_dict(linen_grads)
  assert nnx_grads.keys() == linen_grads.keys()
  # Relative to the largest gradient anywhere: some are zero up to rounding (the key bias's, as
  # softmax ignores a constant shift), so their own scale is noise.
  scale = max(float(np.abs(grad).max()) for grad in linen_grads.values())
  for path, grad in linen_grads.items():
    np.testing.assert_allclose(nnx_grads[path], np.asarray(grad), atol=GRAD_RTOL * scale, rtol=0, err_msg=str(path))

  after = param_dict(student)
  assert all(not np.array_equal(after[path], before[path]) for path in before)

  step_losses = [float(nnx_value)] + [float(train_step(student, teacher, optimizer, ids, mask)[0]) for _ in range(4)]
  assert all(b < a for a, b in zip(step_losses, step_losses[1:])), step_losses
  assert int(optimizer.step[...]) == 5
  # The teacher is only read.
  assert all(np.array_equal(value, teacher_before[path]) for path, value in param_dict(teacher).items())


def test_dropout_draws_from_the_wrapped_modules_dropout_stream(tiny_mlm_pair):
  _, student_dir = tiny_mlm_pair
  ids, mask = tiny_batch()
  model, params = convert.load_pretrained(student_dir, head="masked_lm")

  def logits(nnx_model, deterministic):
    return np.asarray(nnx_model(ids, attention_mask=mask, deterministic=deterministic).logits)

  student = wrap(model, params, ids, mask, nnx.Rngs(params=0, dropout=1))
  reference = np.asarray(model.apply({"params": params}, ids, attention_mask=mask, deterministic=True).logits)
  np.testing.assert_array_equal(logits(student, True), reference)
  first, second = logits(student, False), logits(student, False)
  assert not np.allclose(first, reference) and not np.allclose(first, second)  # each call a new key
  np.testing.assert_array_equal(logits(student, True), reference)
  # The same seed gives the same dropout masks once as many calls have gone before: every call,
  # deterministic or not, draws one key from each stream.
  again = wrap(model, params, ids, mask, nnx.Rngs(params=0, dropout=1))
  logits(again, True)
  np.testing.assert_array_equal(logits(again, False), first)

  # Under nnx.jit the stream advances too: two calls of one compiled function draw different masks.
  forward = nnx.jit(lambda m: m(ids, attention_mask=mask, deterministic=False).logits)
  count = int(student.to_nnx__rngs.dropout.count[...])
  jitted_first, jitted_second = np.asarray(forward(student)), np.asarray(forward(student))
  assert int(student.to_nnx__rngs.dropout.count[...]) == count + 2
  assert not np.allclose(jitted_first, jitted_second) and not np.allclose(jitted_first, reference)
