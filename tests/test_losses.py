"""losses.py against float64 NumPy formulas and against torch applied as distiller.py applies it.

The torch references select rows with `torch.masked_select` and call the same `torch.nn` loss the
original trainer calls (Hugging Face examples/research_projects/distillation/distiller.py).
Tolerance: the ratio loss_sum / denominator agrees to 1e-6 relative, or 1e-6 absolute for O(1)
values (the float32 computation against the float64 reference).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from distilbert_jax import losses

SEEDS = (0, 1, 2)
BATCH, LENGTH, VOCAB, HIDDEN = 4, 16, 50, 24
TOLERANCE = dict(rtol=1e-6, atol=1e-6)


def _case(seed, width=VOCAB, scale=3.0):
  """Student and teacher [batch, length, width] float32, and a random 0/1 mask [batch, length]."""
  rs = np.random.RandomState(seed)
  student = (scale * rs.randn(BATCH, LENGTH, width)).astype(np.float32)
  teacher = (scale * rs.randn(BATCH, LENGTH, width)).astype(np.float32)
  mask = rs.rand(BATCH, LENGTH) < 0.3
  mask[0, 0] = True  # at least one selected row
  return student, teacher, mask


def _ratio(pair):
  loss_sum, denominator = pair
  return float(loss_sum) / float(denominator)


def _torch_rows(x, mask):
  """The original's selection: masked_select over the row mask expanded to the last axis."""
  x = torch.from_numpy(np.asarray(x, dtype=np.float64))
  row_mask = torch.from_numpy(mask).unsqueeze(-1).expand_as(x)
  return torch.masked_select(x, row_mask).view(-1, x.shape[-1])


def _log_softmax64(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# float64 NumPy references: (loss_sum, denominator) for general weights.
def _kl_reference(s, t, w, temperature):
  log_ps, log_pt = _log_softmax64(s / temperature), _log_softmax64(t / temperature)
  pt = np.exp(log_pt)
  kl = np.where(pt > 0, pt * (log_pt - log_ps), 0.0).sum(-1) * temperature**2
  return (w * kl).sum(), w.sum()


def _cross_entropy_reference(logits, labels, w):
  nll = -np.take_along_axis(_log_softmax64(logits), labels[..., None], -1)[..., 0]
  return (w * nll).sum(), w.sum()


def _cosine_reference(s, t, w):
  s, t = np.float64(s), np.float64(t)
  cos = (s * t).sum(-1) / np.sqrt(((s * s).sum(-1) + 1e-12) * ((t * t).sum(-1) + 1e-12))
  return (w * (1 - cos)).sum(), w.sum()


def _mse_logits_reference(s, t, w):
  return (w * ((np.float64(s) - t) ** 2).sum(-1)).sum(), w.sum()


def _hidden_mse_reference(s, t, w):
  return (w * ((np.float64(s) - t) ** 2).sum(-1)).sum(), w.sum() * s.shape[-1]


@pytest.mark.parametrize("seed", SEEDS)
def test_kl_div_loss_matches_torch_batchmean_times_t_squared(seed):
  student, teacher, mask = _case(seed)
  temperature = (1.0, 2.0, 4.0)[seed]
  s_slct, t_slct = _torch_rows(student, mask), _torch_rows(teacher, mask)
  expected = torch.nn.KLDivLoss(reduction="batchmean")(
      torch.nn.functional.log_softmax(s_slct / temperature, dim=-1),
      torch.nn.functional.softmax(t_slct / temperature, dim=-1)) * temperature**2
  got = losses.kl_div_loss(student, teacher, mask.astype(np.float32), temperature)
  np.testing.assert_allclose(_ratio(got), expected.item(), **TOLERANCE)
  assert float(got[1]) == mask.sum()


@pytest.mark.parametrize("seed", SEEDS)
def test_masked_lm_loss_matches_torch_cross_entropy_ignore_index(seed):
  logits, _, mask = _case(seed)
  labels = np.random.RandomState(seed + 100).randint(0, VOCAB, (BATCH, LENGTH))
  lm_labels = torch.from_numpy(np.where(mask, labels, -100))  # the original's label convention
  expected = torch.nn.CrossEntropyLoss(ignore_index=-100)(
      torch.from_numpy(np.float64(logits)).view(-1, VOCAB), lm_labels.view(-1))
  got = losses.masked_lm_loss(logits, labels, mask.astype(np.float32))
  np.testing.assert_allclose(_ratio(got), expected.item(), **TOLERANCE)
  # Labels -100 at unselected positions (the original's form) give the same finite result.
  np.testing.assert_allclose(
      _ratio(losses.masked_lm_loss(logits, lm_labels.numpy(), mask.astype(np.float32))),
      expected.item(), **TOLERANCE)


@pytest.mark.parametrize("seed", SEEDS)
def test_cosine_embedding_loss_matches_torch_with_target_one(seed):
  student, teacher, mask = _case(seed, width=HIDDEN)
  s_slct, t_slct = _torch_rows(student, mask), _torch_rows(teacher, mask)
  target = s_slct.new(s_slct.size(0)).fill_(1)
  expected = torch.nn.CosineEmbeddingLoss(reduction="mean")(s_slct, t_slct, target)
  got = losses.cosine_embedding_loss(student, teacher, mask.astype(np.float32))
  np.testing.assert_allclose(_ratio(got), expected.item(), **TOLERANCE)


def test_cosine_embedding_loss_matches_torch_epsilon_for_tiny_and_zero_vectors():
  # torch adds 1e-12 to each squared norm (not cosine_similarity's clamp_min(eps^2)); the two
  # differ visibly for norms near 1e-6, and a zero vector has cos 0, i.e. loss 1.
  rows = np.array([[1e-7, 0.0], [1e-6, 1e-6], [0.0, 0.0], [3.0, -4.0]], np.float32)
  others = np.array([[1e-7, 0.0], [1e-6, 1e-6], [0.0, 0.0], [0.0, 0.0]], np.float32)
  for i in range(len(rows)):
    expected = torch.nn.CosineEmbeddingLoss()(
        torch.from_numpy(np.float64(rows[i:i + 1])), torch.from_numpy(np.float64(others[i:i + 1])),
        torch.ones(1))
    got = losses.cosine_embedding_loss(rows[i:i + 1], others[i:i + 1], np.ones(1, np.float32))
    np.testing.assert_allclose(_ratio(got), expected.item(), **TOLERANCE)


@pytest.mark.parametrize("seed", SEEDS)
def test_mse_logits_loss_matches_torch_sum_over_selected_rows(seed):
  student, teacher, mask = _case(seed)
  s_slct, t_slct = _torch_rows(student, mask), _torch_rows(teacher, mask)
  expected = torch.nn.MSELoss(reduction="sum")(s_slct, t_slct) / s_slct.size(0)
  got = losses.mse_logits_loss(student, teacher, mask.astype(np.float32))
  np.testing.assert_allclose(_ratio(got), expected.item(), **TOLERANCE)


@pytest.mark.parametrize("seed", SEEDS)
def test_hidden_mse_loss_matches_torch_mean_over_selected_positions(seed):
  student, teacher, mask = _case(seed, width=HIDDEN)
  expected = torch.nn.MSELoss(reduction="mean")(_torch_rows(student, mask),
                                                _torch_rows(teacher, mask))
  got = losses.hidden_mse_loss(student, teacher, mask.astype(np.float32))
  np.testing.assert_allclose(_ratio(got), expected.item(), **TOLERANCE)


# name -> (loss with the signature f(student, teacher, weights), float64 reference, width)
_LABELS = np.random.RandomState(7).randint(0, VOCAB, (BATCH, LENGTH))
LOSSES = {
    "kl_div": (functools.partial(losses.kl_div_loss, temperature=2.0),
               functools.partial(_kl_reference, temperature=2.0), VOCAB),
    "masked_lm": (lambda s, t, w: losses.masked_lm_loss(s, _LABELS, w),
                  lambda s, t, w: _cross_entropy_reference(s, _LABELS, w), VOCAB),
    "cosine_embedding": (losses.cosine_embedding_loss, _cosine_reference, HIDDEN),
    "mse_logits": (losses.mse_logits_loss, _mse_logits_reference, VOCAB),
    "hidden_mse": (losses.hidden_mse_loss, _hidden_mse_reference, HIDDEN),
}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("seed", SEEDS)
def test_loss_sum_and_denominator_match_float64_numpy_with_general_weights(name, seed):
  loss_fn, reference, width = LOSSES[name]
  student, teacher, _ = _case(seed, width)
  weights = np.random.RandomState(seed).choice([0.0, 0.5, 1.0, 2.0], (BATCH, LENGTH))
  weights = weights.astype(np.float32)
  loss_sum, denominator = loss_fn(student, teacher, weights)
  expected_sum, expected_denominator = reference(student, teacher, np.float64(weights))
  np.testing.assert_allclose(float(loss_sum), expected_sum, **TOLERANCE)
  np.testing.assert_allclose(float(denominator), expected_denominator, **TOLERANCE)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_of_gathered_rows_equals_loss_with_leading_batch_and_length(name):
  loss_fn, _, width = LOSSES[name]
  if name == "masked_lm":  # its labels are fixed at [batch, length]; gather them too
    loss_fn = lambda s, t, w: losses.masked_lm_loss(s, _LABELS.reshape(s.shape[:-1]), w)
  student, teacher, mask = _case(3, width)
  weights = mask.astype(np.float32)
  full = loss_fn(student, teacher, weights)
  flat = loss_fn(student.reshape(-1, width), teacher.reshape(-1, width), weights.reshape(-1))
  np.testing.assert_allclose(np.array(flat), np.array(full), rtol=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_bfloat16_inputs_give_float32_loss_of_rounded_inputs(name):
  loss_fn, _, width = LOSSES[name]
  student, teacher, mask = _case(4, width)
  student_bf16, teacher_bf16 = jnp.bfloat16(student), jnp.bfloat16(teacher)
  got = loss_fn(student_bf16, teacher_bf16, jnp.bfloat16(mask))
  expected = loss_fn(np.float32(student_bf16), np.float32(teacher_bf16), np.float32(mask))
  assert all(x.dtype == jnp.float32 for x in got)
  np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_all_zero_weights_give_zero_denominator_and_finite_sum(name):
  loss_fn, _, width = LOSSES[name]
  student, teacher, _ = _case(5, width)
  loss_sum, denominator = loss_fn(student, teacher, np.zeros((BATCH, LENGTH), np.float32))
  assert float(denominator) == 0.0
  assert float(loss_sum) == 0.0


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_are_finite_even_where_teacher_softmax_underflows(name):
  loss_fn, _, width = LOSSES[name]
  # Scale 300 makes exp underflow in both softmaxes: KL must use 0 * log 0 = 0.
  student, teacher, mask = _case(6, width, scale=300.0)
  student[1, 2] = 0.0  # a zero hidden vector for the cosine loss

  def mean_loss(s):
    loss_sum, denominator = loss_fn(s, teacher, mask.astype(np.float32))
    return loss_sum / denominator

  value, grad = jax.value_and_grad(mean_loss)(jnp.asarray(student))
  assert np.isfinite(float(value))
  assert np.all(np.isfinite(np.asarray(grad)))
  assert np.any(np.asarray(grad) != 0)


def test_pair_losses_reject_mismatched_student_and_teacher_shapes():
  student = np.zeros((2, 3, 8), np.float32)
  with pytest.raises(ValueError, match="teacher shape"):
    losses.hidden_mse_loss(student, np.zeros((2, 3, 1), np.float32), np.ones((2, 3)))


@pytest.mark.parametrize("seed", SEEDS)
def test_kl_div_loss_gradients_match_torch_autograd_for_student_and_teacher(seed):
  # The KL's backward pass is written out (losses._kl_rows); both inputs' gradients are held
  # against torch.autograd of distiller.py's formula on the same rows.
  student, teacher, mask = _case(seed)
  temperature = (1.0, 2.0, 4.0)[seed]
  s, t = torch.tensor(student, requires_grad=True), torch.tensor(teacher, requires_grad=True)
  rows = torch.tensor(mask.astype(bool))
  expected = torch.nn.KLDivLoss(reduction="batchmean")(
      torch.nn.functional.log_softmax(s[rows] / temperature, dim=-1),
      torch.nn.functional.softmax(t[rows] / temperature, dim=-1)) * temperature**2
  expected.backward()

  def mean_loss(s_, t_):
    loss_sum, denominator = losses.kl_div_loss(s_, t_, mask.astype(np.float32), temperature)
    return loss_sum / denominator

  got = jax.grad(mean_loss, argnums=(0, 1))(jnp.asarray(student), jnp.asarray(teacher))
  for ours, ref in zip(got, (s.grad, t.grad)):
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=1e-7, rtol=1e-5)


def test_hidden_layer_map_matches_each_student_layer_to_its_source_and_explicit_pairs_win():
  assert losses.hidden_layer_map((), (0, 3, 5)) == ((1, 1), (2, 4), (3, 6))
  assert losses.hidden_layer_map([[0, 0], [3, 6]], (0, 3, 5)) == ((0, 0), (3, 6))


def test_hidden_states_loss_is_the_float64_sum_of_squared_differences_over_the_pairs():
  rng = np.random.default_rng(0)
  student = [rng.normal(size=(2, 5, 4)) for _ in range(3)]
  teacher = [rng.normal(size=(2, 5, 4)) for _ in range(4)]
  weights = (rng.random((2, 5)) > 0.3).astype(np.float64)
  layer_map = ((1, 1), (2, 3))
  expected = sum(np.sum(weights[..., None] * (student[s] - teacher[t]) ** 2) for s, t in layer_map)
  got = losses.hidden_states_loss([jnp.asarray(x, jnp.float32) for x in student],
                                  [jnp.asarray(x, jnp.float32) for x in teacher], layer_map,
                                  jnp.asarray(weights, jnp.float32))
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
