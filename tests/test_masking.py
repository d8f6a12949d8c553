"""masking.py against the semantics of distiller.py's `prepare_batch_mlm` (Hugging Face
examples/research_projects/distillation), on 64 x 128 batches with varied padding.

Statistical checks use 4 binomial standard deviations unless stated otherwise.
"""
import functools
import math

import jax
import numpy as np
import pytest

from distilbert_jax.data import masking

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL_IDS = (PAD, UNK, CLS, SEP, MASK)
VOCAB = 1000
BATCH, LENGTH = 64, 128
NUM_SEEDS = 50


def _batch(seed, vocab=VOCAB, dtype=np.int32):
  """BERT-like rows: [CLS] words (about 2% [UNK]) [SEP] then padding; lengths 8..128."""
  rs = np.random.RandomState(seed)
  lengths = rs.randint(8, LENGTH + 1, BATCH)
  input_ids = rs.randint(len(SPECIAL_IDS), vocab, (BATCH, LENGTH))
  input_ids[rs.rand(BATCH, LENGTH) < 0.02] = UNK
  attention_mask = np.arange(LENGTH)[None, :] < lengths[:, None]
  input_ids[:, 0] = CLS
  input_ids[np.arange(BATCH), lengths - 1] = SEP
  input_ids[~attention_mask] = PAD
  return input_ids.astype(dtype), attention_mask.astype(np.int32)


@functools.partial(jax.jit, static_argnames=("num_seeds", "vocab"))
def _mask_many_jit(input_ids, attention_mask, token_probs, num_seeds, vocab):
  mask_fn = functools.partial(masking.mask_tokens, input_ids=input_ids,
                              attention_mask=attention_mask, token_probs=token_probs,
                              mask_token_id=MASK, vocab_size=vocab)
  return jax.vmap(mask_fn)(jax.random.split(jax.random.key(0), num_seeds))


def _mask_many(input_ids, attention_mask, token_probs, num_seeds=NUM_SEEDS, vocab=VOCAB):
  """`mask_tokens` under jit and vmap over `num_seeds` keys: [seeds, batch, length] arrays."""
  out = _mask_many_jit(input_ids, attention_mask, token_probs, num_seeds=num_seeds, vocab=vocab)
  return jax.tree.map(np.asarray, out)


def test_num_to_predict_equals_float64_ceil_including_exact_multiples():
  num_real_tokens = np.arange(0, 300_000)
  for mlm_probability in (0.15, 0.1, 0.2, 0.3, 0.123, 1.0):
    expected = [math.ceil(mlm_probability * int(n)) for n in num_real_tokens]
    got = jax.jit(masking.num_to_predict, static_argnums=1)(num_real_tokens, mlm_probability)
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_chooses_exactly_ceil_fifteen_percent_of_real_tokens():
  input_ids, attention_mask = _batch(0)
  out = _mask_many(input_ids, attention_mask, masking.uniform_token_probs(VOCAB, SPECIAL_IDS))
  num_real = int(attention_mask.sum())
  chosen = out.mlm_weights.sum(axis=(1, 2))
  np.testing.assert_array_equal(chosen, math.ceil(0.15 * num_real))
  assert set(np.unique(out.mlm_weights)) == {0.0, 1.0}
  assert out.input_ids.dtype == out.mlm_labels.dtype == np.int32
  assert out.mlm_weights.dtype == np.float32


def test_pads_and_special_ids_are_never_chosen_over_many_seeds():
  for seed in range(3):
    input_ids, attention_mask = _batch(seed)
    out = _mask_many(input_ids, attention_mask, masking.uniform_token_probs(VOCAB, SPECIAL_IDS))
    chosen = out.mlm_weights > 0
    assert not chosen[:, attention_mask == 0].any()
    assert not chosen[:, np.isin(input_ids, SPECIAL_IDS)].any()
    # Unchosen positions are fed unchanged; labels are always the original ids.
    np.testing.assert_array_equal(np.where(chosen, input_ids, out.input_ids),
                                  np.broadcast_to(input_ids, out.input_ids.shape))
    np.testing.assert_array_equal(out.mlm_labels, np.broadcast_to(input_ids, chosen.shape))


def test_chooses_every_eligible_token_and_nothing_else_when_too_few_are_eligible():
  # Mostly [UNK] (probability 0): n_tgt exceeds the eligible count, where torch.multinomial
  # without replacement would raise.
  input_ids, attention_mask = _batch(1)
  rs = np.random.RandomState(1)
  input_ids = np.where((rs.rand(BATCH, LENGTH) < 0.9) & (attention_mask == 1), UNK, input_ids)
  eligible = (attention_mask == 1) & ~np.isin(input_ids, SPECIAL_IDS)
  assert eligible.sum() < math.ceil(0.15 * attention_mask.sum())
  out = _mask_many(input_ids, attention_mask, masking.uniform_token_probs(VOCAB, SPECIAL_IDS))
  np.testing.assert_array_equal(out.mlm_weights > 0,
                                np.broadcast_to(eligible, out.mlm_weights.shape))


def test_chosen_positions_split_80_mask_10_random_10_unchanged():
  input_ids, attention_mask = _batch(2)
  out = _mask_many(input_ids, attention_mask, masking.uniform_token_probs(VOCAB, SPECIAL_IDS))
  chosen = out.mlm_weights > 0
  fed, original = out.input_ids[chosen], out.mlm_labels[chosen]
  n = fed.size
  # A random replacement may draw [MASK] or the original id itself (probability 1 / VOCAB each).
  expected = {"mask": 0.8 + 0.1 / VOCAB, "unchanged": 0.1 + 0.1 / VOCAB,
              "random": 0.1 * (1 - 2 / VOCAB)}
  observed = {"mask": np.sum(fed == MASK), "unchanged": np.sum(fed == original),
              "random": np.sum((fed != MASK) & (fed != original))}
  for kind, p in expected.items():
    assert abs(observed[kind] / n - p) < 4 * math.sqrt(p * (1 - p) / n), (kind, observed, n)
  # Random ids are uniform on [0, VOCAB): mean (VOCAB - 1) / 2, sd VOCAB / sqrt(12).
  random_ids = fed[(fed != MASK) & (fed != original)]
  assert random_ids.min() >= 0 and random_ids.max() < VOCAB
  assert abs(random_ids.mean() - (VOCAB - 1) / 2) < 4 * VOCAB / math.sqrt(12 * random_ids.size)


def test_token_probs_from_counts_is_clipped_count_to_minus_smoothing_with_specials_zero():
  counts = np.array([5, 0, 7, 3, 1, 1000, 0, 16])
  got = masking.token_probs_from_counts(counts, special_token_ids=[0, 2, 3], smoothing=0.7)
  expected = np.maximum(counts, 1.0) ** -0.7
  expected[[0, 2, 3]] = 0.0
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-7)
  np.testing.assert_array_equal(masking.uniform_token_probs(5, [1, 4]), [1, 0, 1, 1, 0])


def test_smoothing_masks_rare_tokens_more_often_as_count_power_predicts():
  # Zipf counts: the token of frequency rank r (id r + 5) occurs 1e6 / (r + 1) times.
  ranks = np.arange(VOCAB) - len(SPECIAL_IDS)
  counts = np.where(ranks >= 0, 1e6 / (np.maximum(ranks, 0) + 1), 0)
  token_probs = masking.token_probs_from_counts(counts, SPECIAL_IDS, smoothing=0.7)
  rs = np.random.RandomState(3)  # every word equally often, so rates compare token weights
  input_ids = rs.randint(len(SPECIAL_IDS), VOCAB, (BATCH, LENGTH)).astype(np.int32)
  attention_mask = np.ones_like(input_ids)
  out = _mask_many(input_ids, attention_mask, token_probs)
  frequent, rare = np.arange(5, 105), np.arange(900, 1000)  # 100 most, 100 least frequent

  def masking_rate(token_ids):
    in_group = np.isin(input_ids, token_ids)
    return out.mlm_weights[:, in_group].mean()

  def weight(token_ids):
    return np.float64(token_probs[token_ids])

  # Direction and rough size from count^-0.7 alone (to first order the rate is proportional
  # to the weight; saturation of the rare tokens' rate lowers the ratio by about 8% here).
  rate_ratio = masking_rate(rare) / masking_rate(frequent)
  weight_ratio = weight(rare).mean() / weight(frequent).mean()
  assert rate_ratio > 5
  assert 0.75 * weight_ratio < rate_ratio < 1.05 * weight_ratio
  # Precisely: Gumbel-top-k keeps scores log(w) + G above a threshold t, so a position is
  # chosen with probability 1 - exp(-lam * w), lam = exp(-t), with lam set by the expected
  # count equalling n_tgt (float64 bisection on log lam).
  position_weights = np.float64(token_probs[input_ids]).ravel()
  n_tgt = math.ceil(0.15 * input_ids.size)
  lo, hi = -10.0, 30.0
  for _ in range(100):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if np.sum(-np.expm1(-np.exp(mid) * position_weights)) < n_tgt else (lo, mid)
  lam = np.exp(lo)
  for group in (frequent, rare):
    group_weights = np.float64(token_probs[input_ids[np.isin(input_ids, group)]])
    predicted = np.mean(-np.expm1(-lam * group_weights))
    trials = group_weights.size * NUM_SEEDS
    # 4 binomial sigmas (sampling without replacement only narrows the spread) plus 1% for
    # the threshold model's finite-batch error.
    tolerance = 4 * math.sqrt(predicted * (1 - predicted) / trials) + 0.01 * predicted
    assert abs(masking_rate(group) - predicted) < tolerance, (masking_rate(group), predicted)


def test_same_rng_gives_same_result_and_different_rng_a_different_one():
  input_ids, attention_mask = _batch(4)
  token_probs = masking.uniform_token_probs(VOCAB, SPECIAL_IDS)
  mask_fn = jax.jit(functools.partial(masking.mask_tokens, mask_token_id=MASK, vocab_size=VOCAB))
  first = mask_fn(jax.random.key(7), input_ids, attention_mask, token_probs)
  again = mask_fn(jax.random.key(7), input_ids, attention_mask, token_probs)
  other = mask_fn(jax.random.key(8), input_ids, attention_mask, token_probs)
  eager = masking.mask_tokens(jax.random.key(7), input_ids, attention_mask, token_probs,
                              mask_token_id=MASK, vocab_size=VOCAB)
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(eager)):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first.mlm_weights, other.mlm_weights)
  assert not np.array_equal(first.input_ids, other.input_ids)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.int64])
def test_integer_id_dtypes_give_the_same_int32_result(dtype):
  input_ids, attention_mask = _batch(5)
  token_probs = masking.uniform_token_probs(VOCAB, SPECIAL_IDS)
  expected = masking.mask_tokens(jax.random.key(0), input_ids, attention_mask, token_probs,
                                 mask_token_id=MASK, vocab_size=VOCAB)
  got = masking.mask_tokens(jax.random.key(0), input_ids.astype(dtype),
                            attention_mask.astype(bool), token_probs,
                            mask_token_id=MASK, vocab_size=VOCAB)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def test_ids_above_65535_survive_where_not_masked():
  vocab = 100_000
  input_ids, attention_mask = _batch(6, vocab=vocab, dtype=np.uint32)
  assert (input_ids > 65_535).sum() > 1000
  out = _mask_many(input_ids, attention_mask, masking.uniform_token_probs(vocab, SPECIAL_IDS),
                   num_seeds=4, vocab=vocab)
  kept = out.mlm_weights == 0
  np.testing.assert_array_equal(out.input_ids[kept], np.broadcast_to(input_ids, kept.shape)[kept])
  np.testing.assert_array_equal(out.mlm_labels, np.broadcast_to(input_ids, kept.shape))
  # Chosen large ids are predicted too, and random replacements reach above 65535.
  assert (out.mlm_labels[~kept] > 65_535).any()
  assert (out.input_ids[~kept] > 65_535).any()
