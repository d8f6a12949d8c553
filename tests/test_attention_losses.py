"""attention_losses against float64 NumPy written from the papers' formulas (MiniLM eq. 6-8,
MiniLMv2 eq. 3-6, TinyBERT eq. 3), on padded batches (right padding, left padding, one full row),
with student and teacher of different widths and, for MiniLMv2, head counts; R != heads.

Tolerance: rtol 1e-5 on every sum and denominator (float32 math against float64; the sums are of
a few hundred terms of order 1). Gradients: exactly zero for the teacher, nonzero for the student.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distilbert_jax import attention_losses

RTOL = 1e-5
BATCH, LENGTH = 3, 7


def padded_mask():
  mask = np.ones((BATCH, LENGTH), np.float64)
  mask[1, 4:] = 0  # right padding
  mask[2, :2] = 0  # left padding
  return mask


def qkv(seed, heads, head_dim, scale=1.0):
  """(query, key, value), each [batch, length, heads, head_dim] float64."""
  rs = np.random.RandomState(seed)
  return tuple(scale * rs.randn(BATCH, LENGTH, heads, head_dim) for _ in range(3))


# ---------------------------------------------------------------------------- float64 references
def np_softmax_masked(scores, key_mask):
  """scores [..., query, key]; probabilities over the real keys only (0 at padding keys)."""
  scores = np.where(key_mask, scores, -np.inf)
  scores = scores - scores.max(-1, keepdims=True)
  e = np.exp(scores)
  return e / e.sum(-1, keepdims=True)


def np_relation_kl_mean(sx, sy, tx, ty, mask):
  """1 / (heads |x|) sum over heads a and real positions t of KL(T_{a,t} || S_{a,t}), inputs
  [batch, length, heads, d]; written loop by loop, one example and one head at a time."""
  total, count = 0.0, 0.0
  for b in range(BATCH):
    real = np.flatnonzero(mask[b])
    for a in range(sx.shape[2]):
      s = sx[b, real, a] @ sy[b, real, a].T / np.sqrt(sx.shape[-1])  # [real, real]
      t = tx[b, real, a] @ ty[b, real, a].T / np.sqrt(tx.shape[-1])
      ps = np.exp(s - s.max(-1, keepdims=True)); ps /= ps.sum(-1, keepdims=True)
      pt = np.exp(t - t.max(-1, keepdims=True)); pt /= pt.sum(-1, keepdims=True)
      total += np.sum(pt * (np.log(pt) - np.log(ps)))
      count += len(real)
  return total, count


def np_split_relation_heads(x, r):
  """Concatenate the heads, split the width into r relation heads."""
  b, l, h, d = x.shape
  return x.reshape(b, l, h * d).reshape(b, l, r, h * d // r)


def np_tinybert_attention(sq, sk, tq, tk, mask):
  """sum of squared score differences over heads and real (query, key) pairs, and their number."""
  total, count = 0.0, 0.0
  for b in range(BATCH):
    real = np.flatnonzero(mask[b])
    for a in range(sq.shape[2]):
      s = sq[b, real, a] @ sk[b, real, a].T / np.sqrt(sq.shape[-1])
      t = tq[b, real, a] @ tk[b, real, a].T / np.sqrt(tq.shape[-1])
      total += np.sum((s - t) ** 2)
      count += len(real) ** 2
  return total, count


def f32(*xs):
  return [jnp.asarray(x, jnp.float32) for x in xs]


def assert_sum_and_count(ours, ref):
  np.testing.assert_allclose(float(ours[0]), ref[0], rtol=RTOL)
  np.testing.assert_allclose(float(ours[1]), ref[1], rtol=RTOL)


# ---------------------------------------------------------------------------- values
def test_attention_distribution_loss_matches_minilm_eq6_in_float64():
  mask = padded_mask()
  (sq, sk, _), (tq, tk, _) = qkv(0, 4, 8), qkv(1, 4, 16, scale=2.0)  # widths 32 and 64, equal heads
  ours = attention_losses.attention_distribution_loss(*f32(sq, sk, tq, tk, mask))
  ref = np_relation_kl_mean(sq, sk, tq, tk, mask)
  assert ref[0] > 1.0  # a real divergence, not a near-zero sum
  assert_sum_and_count(ours, ref)


def test_value_relation_loss_matches_minilm_eq8_in_float64():
  mask = padded_mask()
  (_, _, sv), (_, _, tv) = qkv(2, 4, 8), qkv(3, 4, 12)
  ours = attention_losses.value_relation_loss(*f32(sv, tv, mask))
  assert_sum_and_count(ours, np_relation_kl_mean(sv, sv, tv, tv, mask))


@pytest.mark.parametrize("num_relation_heads", [2, 8])
def test_minilmv2_relations_match_eq6_with_other_head_counts_and_widths(num_relation_heads):
  mask = padded_mask()
  student, teacher = qkv(4, 4, 8), qkv(5, 6, 16)  # 4 heads x 8 = 32 wide; 6 heads x 16 = 96 wide
  ours = attention_losses.relations_loss(tuple(f32(*student)), tuple(f32(*teacher)), *f32(mask),
                                         num_relation_heads)
  total, count = 0.0, 0.0
  for s, t in zip(student, teacher):
    s, t = np_split_relation_heads(s, num_relation_heads), np_split_relation_heads(t, num_relation_heads)
    relation_sum, count = np_relation_kl_mean(s, s, t, t, mask)
    total += relation_sum
  assert count == mask.sum() * num_relation_heads
  assert_sum_and_count(ours, (total, count))


def test_tinybert_attention_loss_matches_eq3_over_real_pairs_in_float64():
  mask = padded_mask()
  (sq, sk, _), (tq, tk, _) = qkv(6, 4, 8), qkv(7, 4, 16)
  ours = attention_losses.attention_score_loss(*f32(sq, sk, tq, tk, mask))
  ref = np_tinybert_attention(sq, sk, tq, tk, mask)
  assert_sum_and_count(ours, ref)
  np.testing.assert_allclose(float(attention_losses.query_key_pairs(jnp.asarray(mask))) * 4, ref[1], rtol=0)


def test_padding_positions_do_not_change_any_loss():
  """Anything at a padding position (query or key) leaves every loss as it was."""
  mask = padded_mask()
  student, teacher = qkv(8, 4, 8), qkv(9, 4, 8)
  noisy = [tuple(np.where(mask[:, :, None, None] == 1, x, 1e3 * np.random.RandomState(10).randn(*x.shape))
                 for x in pair) for pair in (student, teacher)]
  losses = lambda s, t: [
      attention_losses.attention_distribution_loss(*f32(s[0], s[1], t[0], t[1], mask))[0],
      attention_losses.value_relation_loss(*f32(s[2], t[2], mask))[0],
      attention_losses.relations_loss(tuple(f32(*s)), tuple(f32(*t)), *f32(mask), 2)[0],
      attention_losses.attention_score_loss(*f32(s[0], s[1], t[0], t[1], mask))[0]]
  np.testing.assert_allclose(losses(*noisy), losses(student, teacher), rtol=RTOL)


def test_identical_student_and_teacher_give_zero():
  mask = padded_mask()
  q, k, v = f32(*qkv(11, 4, 8))
  m = jnp.asarray(mask, jnp.float32)
  assert abs(float(attention_losses.attention_distribution_loss(q, k, q, k, m)[0])) < 1e-5
  assert abs(float(attention_losses.relations_loss((q, k, v), (q, k, v), m, 2)[0])) < 1e-5
  assert float(attention_losses.attention_score_loss(q, k, q, k, m)[0]) == 0.0


# ---------------------------------------------------------------------------- gradients and errors
@pytest.mark.parametrize("name", ["attention", "value", "relations", "scores"])
def test_gradient_reaches_the_student_only(name):
  mask = jnp.asarray(padded_mask(), jnp.float32)
  student, teacher = tuple(f32(*qkv(12, 4, 8))), tuple(f32(*qkv(13, 4, 8)))
  loss = {
      "attention": lambda s, t: attention_losses.attention_distribution_loss(s[0], s[1], t[0], t[1], mask)[0],
      "value": lambda s, t: attention_losses.value_relation_loss(s[2], t[2], mask)[0],
      "relations": lambda s, t: attention_losses.relations_loss(s, t, mask, 2)[0],
      "scores": lambda s, t: attention_losses.attention_score_loss(s[0], s[1], t[0], t[1], mask)[0],
  }[name]
  student_grads, teacher_grads = jax.grad(loss, argnums=(0, 1))(student, teacher)
  used = {"attention": (0, 1), "value": (2,), "relations": (0, 1, 2), "scores": (0, 1)}[name]
  for i in used:
    g = np.asarray(student_grads[i])
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-4, i
    # Nothing flows to padding positions, which no loss term reads.
    assert np.all(g[np.asarray(mask) == 0] == 0), i
  assert all(np.all(np.asarray(g) == 0) for g in teacher_grads)


def test_gradient_matches_float64_finite_differences():
  """d loss / d student query of the attention distribution loss, against central differences of
  the float64 reference (step 1e-5; rtol 1e-3 for float32 gradients of an O(1) sum)."""
  mask = padded_mask()
  (sq, sk, _), (tq, tk, _) = qkv(14, 2, 4), qkv(15, 2, 4)
  grad = jax.grad(lambda q: attention_losses.attention_distribution_loss(q, *f32(sk, tq, tk, mask))[0])(f32(sq)[0])
  for index in [(0, 1, 0, 2), (1, 3, 1, 0), (2, 5, 0, 3)]:
    step = np.zeros_like(sq)
    step[index] = 1e-5
    numeric = (np_relation_kl_mean(sq + step, sk, tq, tk, mask)[0]
               - np_relation_kl_mean(sq - step, sk, tq, tk, mask)[0]) / 2e-5
    np.testing.assert_allclose(float(grad[index]), numeric, rtol=1e-3, atol=1e-6)


def test_unequal_head_counts_and_relation_heads_that_do_not_divide_are_errors():
  mask = jnp.ones((BATCH, LENGTH))
  s, t = f32(*qkv(16, 4, 8)), f32(*qkv(17, 2, 16))
  with pytest.raises(ValueError, match="equal head counts: the student has 4, the teacher 2"):
    attention_losses.attention_score_loss(s[0], s[1], t[0], t[1], mask)
  with pytest.raises(ValueError, match="equal head counts"):
    attention_losses.attention_distribution_loss(s[0], s[1], t[0], t[1], mask)
  with pytest.raises(ValueError, match="3 relation heads do not divide the width 32"):
    attention_losses.relations_loss(tuple(s), tuple(t), mask, 3)
  with pytest.raises(ValueError, match="do not match the attention mask"):
    attention_losses.value_relation_loss(s[2], t[2], jnp.ones((BATCH, LENGTH + 1)))
