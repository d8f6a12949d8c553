"""Dynamic masked-LM corruption inside the jitted train step.

A port of `Distiller.prepare_batch_mlm` from Hugging Face
`examples/research_projects/distillation/distiller.py`, as static-shape jax.numpy:

1. n_tgt = ceil(mlm_probability * number of real tokens in the whole batch);
2. n_tgt positions of the flattened batch are drawn WITHOUT replacement with probability
   proportional to `token_probs[input_ids]` (`torch.multinomial(x_prob, n_tgt,
   replacement=False)`); the original's `token_probs` gives special tokens weight 0;
3. each chosen position independently becomes [MASK] (80%), a uniformly random id (10%) or stays
   unchanged (10%) (`torch.multinomial(pred_probs, n, replacement=True)`).

Sampling without replacement uses the Gumbel-top-k trick (Kool et al., 2019, "Stochastic Beams
and Where to Find Them"): the n_tgt largest of log(w_i) + Gumbel_i are a draw of the same
successive weighted sampling as torch.multinomial. n_tgt depends on the data, so instead of
`lax.top_k` (static k) we rank all positions with one sort and keep ranks below n_tgt.
"""
from __future__ import annotations

import fractions
from typing import Iterable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class MaskedBatch:
  """The corrupted batch and what the MLM loss needs.

  Attributes:
    input_ids: [batch, length] int32, the ids fed to the student (some replaced).
    mlm_labels: [batch, length] int32, the original ids at every position.
    mlm_weights: [batch, length] float32, 1.0 at the positions chosen for prediction, else 0.0.
      The original's `lm_labels > -1`; it also selects rows for `losses.kl_div_loss` and
      `losses.mse_logits_loss` in MLM mode.
  """
  input_ids: jax.Array
  mlm_labels: jax.Array
  mlm_weights: jax.Array


def token_probs_from_counts(counts: np.ndarray, special_token_ids: Iterable[int],
                            smoothing: float = 0.7) -> np.ndarray:
  """Masking weights from corpus token counts, as the original `train.py` (`--mlm_smoothing`).

  Args:
    counts: [vocab] occurrences of each token id in the training corpus (the original's
      `token_counts.py` pickle).
    special_token_ids: ids never to choose for prediction ([PAD], [CLS], [SEP], [MASK], [UNK]).
    smoothing: exponent; weights max(count, 1) ** -smoothing make rare tokens more likely to be
      masked than their frequency alone would (XLM, Lample & Conneau 2019, section 3.3).

  Returns:
    [vocab] float32 unnormalised weights, 0 at special ids.
  """
  counts = np.asarray(counts, dtype=np.float64)
  token_probs = np.maximum(counts, 1.0) ** -smoothing
  token_probs[list(special_token_ids)] = 0.0
  return token_probs.astype(np.float32)


def uniform_token_probs(vocab_size: int, special_token_ids: Iterable[int]) -> np.ndarray:
  """[vocab_size] float32 ones with special ids 0: BERT's uniform choice of masked positions."""
  token_probs = np.ones(vocab_size, dtype=np.float32)
  token_probs[list(special_token_ids)] = 0.0
  return token_probs


def num_to_predict(num_real_tokens: jax.Array, mlm_probability: float) -> jax.Array:
  """ceil(mlm_probability * num_real_tokens) as int32, exactly (the original's `n_tgt`).

  The original computes it in float64. In float32 the product of an integer rounds up past it
  (0.15 * 100 -> 15.000001 -> 16), so we use integers: mlm_probability as a fraction
  num / den with den <= 10_000 (exact for decimals such as 0.15 = 3 / 20), and
  ceil(num * n / den) = q * num + ceil(r * num / den) with n = q * den + r, which cannot
  overflow int32 since r * num < den**2 <= 1e8.

  Args:
    num_real_tokens: int scalar (or array), the number of real tokens in the batch.
    mlm_probability: static Python float in [0, 1].
  """
  if not 0.0 <= mlm_probability <= 1.0:
    raise ValueError(f"mlm_probability = {mlm_probability} is not in [0, 1]")
  fraction = fractions.Fraction(mlm_probability).limit_denominator(10_000)
  num, den = fraction.numerator, fraction.denominator
  quotient, remainder = jnp.divmod(jnp.asarray(num_real_tokens, jnp.int32), den)
  return quotient * num + (remainder * num + den - 1) // den


def mask_tokens(rng: jax.Array, input_ids: jax.Array, attention_mask: jax.Array,
                token_probs: jax.Array, *, mask_token_id: int, vocab_size: int,
                mlm_probability: float = 0.15, mask_prob: float = 0.8,
                random_prob: float = 0.1) -> MaskedBatch:
  """Chooses MLM targets and corrupts them, like distiller.py's `prepare_batch_mlm`.

  Jittable (static shapes) and deterministic given `rng`. Padding (attention_mask == 0) and ids
  with token_probs 0 are never chosen, even when n_tgt exceeds the eligible positions (where
  torch.multinomial would raise); then every eligible position is chosen.

  Args:
    rng: a PRNG key.
    input_ids: [batch, length] any integer dtype; cast to int32.
    attention_mask: [batch, length] nonzero at real tokens.
    token_probs: [vocab] non-negative weights (`token_probs_from_counts`,
      `uniform_token_probs`).
    mask_token_id: id of [MASK].
    vocab_size: random replacements are drawn uniformly from [0, vocab_size); like the
      original, that range includes special ids.
    mlm_probability: fraction of real tokens to predict (the original's `--mlm_mask_prop`).
    mask_prob: share of chosen positions set to [MASK] (`--word_mask`).
    random_prob: share set to a random id (`--word_rand`); the rest stay unchanged
      (`--word_keep`).

  Returns:
    A `MaskedBatch` of [batch, length] arrays.
  """
  if not 0.0 <= mask_prob + random_prob <= 1.0:
    raise ValueError(f"mask_prob + random_prob = {mask_prob + random_prob} is not in [0, 1]")
  mlm_labels = jnp.asarray(input_ids).astype(jnp.int32)
  is_real = jnp.asarray(attention_mask) != 0
  position_weights = jnp.asarray(token_probs, dtype=jnp.float32)[mlm_labels]
  eligible = is_real & (position_weights > 0)
  n_tgt = num_to_predict(jnp.sum(is_real, dtype=jnp.int32), mlm_probability)

  select_rng, action_rng, random_id_rng = jax.random.split(rng, 3)
  gumbel = jax.random.gumbel(select_rng, mlm_labels.shape, dtype=jnp.float32)
  scores = jnp.where(eligible, jnp.log(position_weights) + gumbel, -jnp.inf).reshape(-1)
  # rank[i] = place of position i in descending score order; a stable sort breaks ties by
  # position, so exactly min(n_tgt, eligible) positions pass the rank test.
  order = jnp.argsort(scores, descending=True, stable=True)
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
  chosen = (rank.reshape(mlm_labels.shape) < n_tgt) & eligible

  action = jax.random.uniform(action_rng, mlm_labels.shape)
  to_mask = chosen & (action < mask_prob)
  to_random = chosen & (action >= mask_prob) & (action < mask_prob + random_prob)
  random_ids = jax.random.randint(random_id_rng, mlm_labels.shape, 0, vocab_size,
                                  dtype=jnp.int32)
  corrupted = jnp.where(to_mask, jnp.int32(mask_token_id),
                        jnp.where(to_random, random_ids, mlm_labels))
  return MaskedBatch(input_ids=corrupted, mlm_labels=mlm_labels,
                     mlm_weights=chosen.astype(jnp.float32))
