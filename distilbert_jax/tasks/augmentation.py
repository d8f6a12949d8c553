"""TinyBERT's data augmentation (Jiao et al. 2020, Algorithm 1) of a task's training examples,
and AugSBERT-style new pairs (Thakur et al. 2021) for pair tasks; the augmented set is cached.

  word_candidates(texts, tokenizer, model, params, top_k)  -> [[Word]]: the top-K MLM words of
                                                              each word of each text
  augment_examples(examples, words_a, words_b, ...)         -> glue.Examples: up to N variants
  sample_pairs(examples, count, seed, excluded)             -> glue.Examples: new training pairs
  augmented_examples(examples, settings, cache_dir, ...)    -> (glue.Examples, key): the two
                                                              above, read from or written to
                                                              cache_dir/augmented-KEY.jsonl
  cached_array(path, compute)                               an .npy computed once (the teacher's
                                                              outputs on the augmented set)

Each word (a unit of the tokenizer's pre-tokenizer: punctuation apart) that holds a letter and
is neither a stop word (STOP_WORDS; TinyBERT skips NLTK's English list) nor a part of a
contraction is masked in the original text, alone (words_per_row > 1: with others of the same
text, far apart, in one MLM row, for speed), and the MLM's K most likely whole-word tokens at
the mask are its candidates (TinyBERT: K=15). A word of several pieces is masked as one [MASK]
token, so the MLM proposes single-piece words for it (TinyBERT takes GloVe neighbours for such
words). Special tokens, "##" pieces, [unused] tokens, tokens without a letter, stop words and
the word itself are never candidates. A variant replaces each word, with probability p
(TinyBERT: 0.4), by one of its candidates drawn uniformly; N variants are drawn (TinyBERT:
N_a=20), and those equal to the original, to an earlier variant, or (either text of a pair) to
any text of `excluded` (the task's dev and test texts) are dropped. In a pair task both texts
are varied, independently.

The random draws of example i come from numpy's generator seeded (seed, 0, i) and those of the
new pairs from (seed, 1), so an example's variants do not depend on the others; the same
inputs, settings and seed give the same file, byte for byte (the MLM's candidates are those of
one jitted program per bucket length).

The cache file has one JSON object a line: {"id", "text_a", "text_b"} (text_b null for single
sentences); ids are ORIGINAL_ID/v (the v-th variant kept) and pair/j. Its key hashes the
training texts, the excluded texts, the settings and the MLM directory's files (names, sizes,
modification times).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from distilbert_jax import atomic, storage
from distilbert_jax.tasks.glue_tasks import Examples

FORMAT_VERSION = 1
# The settings that change the augmented set (the config's `augment` section names them).
SETTING_NAMES = ("num_variants", "top_k", "replace_prob", "num_pairs", "seed", "mlm_max_length", "words_per_row")
# English function words, never replaced (nor sent to the MLM): a swap of these changes the
# grammar more than the content, and skipping them spares the MLM roughly half the words.
STOP_WORDS = frozenset("""
a an the this that these those i me my mine myself we us our ours ourselves you your yours yourself
yourselves he him his himself she her hers herself it its itself they them their theirs themselves
what which who whom whose am is are was were be been being have has had having do does did doing
will would shall should can could may might must and but if or nor because as until while of at by
for with about against between into through during before after above below to from up down in out
on off over under again further then once here there when where why how all any both each few more
most other some such no not only own same so than too very s t don just now ll re ve d m o y
""".split())


class Word(NamedTuple):
  """A replaceable word: characters [start, end) of its text and its candidate replacements."""
  start: int
  end: int
  candidates: tuple


# ===================================================================================== MLM candidates
def allowed_tokens(tokenizer, vocab_size: int) -> np.ndarray:
  """bool [vocab_size]: tokens that may replace a word (a whole word holding a letter, not a
  stop word: a content word is replaced by a content word)."""
  special = set(tokenizer.all_special_tokens)
  allowed = np.zeros(vocab_size, bool)
  for token, i in tokenizer.get_vocab().items():
    if i < vocab_size and token not in special and not token.startswith("##") and token not in STOP_WORDS \
        and not re.fullmatch(r"\[.*\]", token) and any(c.isalpha() for c in token):
      allowed[i] = True
  return allowed


def _masked_rows(texts: Sequence[str], tokenizer, max_length: int, words_per_row: int):
  """(rows, words): rows [(token ids int32 [length] with up to words_per_row words each
  replaced by one [MASK], the masks' positions [m], the index of each masked word in `words`
  [m], the words' own token ids [m] (-1 for a word of several pieces))]; words: (text index,
  start, end) of every replaceable word, text by text. A text of n words gives ceil(n /
  words_per_row) rows; row q masks words q, q + g, q + 2g, ... (g the row count), as far apart
  as they can be. Words past max_length tokens are left out."""
  encoded = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length,
                      padding=False, return_offsets_mapping=True)
  mask_id = tokenizer.mask_token_id
  rows, words = [], []
  for t, text in enumerate(texts):
    ids, offsets, word_ids = encoded["input_ids"][t], encoded["offset_mapping"][t], encoded.word_ids(t)
    pieces = {}
    for position, w in enumerate(word_ids):
      if w is not None:
        pieces.setdefault(w, []).append(position)
    if len(ids) == max_length and pieces:  # cut: the last word may have lost pieces
      pieces.popitem()
    spans = []  # (first piece, last piece) of each replaceable word
    for positions in pieces.values():
      start, end = offsets[positions[0]][0], offsets[positions[-1]][1]
      # A part of a contraction ("won" of "won't") is no word of its own.
      apostrophe = text[end:end + 1] in ("'", "\u2019") or text[max(start - 1, 0):start] in ("'", "\u2019")
      if any(c.isalpha() for c in text[start:end]) and text[start:end].lower() not in STOP_WORDS and not apostrophe:
        spans.append((positions[0], positions[-1]))
        words.append((t, start, end))
    first_word = len(words) - len(spans)
    groups = -(-len(spans) // words_per_row)
    for q in range(groups):
      row, positions, cursor = [], [], 0
      for w in range(q, len(spans), groups):
        first, last = spans[w]
        row += ids[cursor:first]
        positions.append(len(row))
        row.append(mask_id)
        cursor = last + 1
      row += ids[cursor:]
      masked = list(range(first_word + q, first_word + len(spans), groups))
      own = [ids[spans[w][0]] if spans[w][0] == spans[w][1] else -1 for w in range(q, len(spans), groups)]
      rows.append((np.asarray(row, np.int32), positions, masked, own))
  return rows, words


def make_top_tokens(model, allowed: np.ndarray, count: int) -> Callable:
  """jitted top(params, input_ids [b, L], attention_mask [b, L], positions [b, m]) -> int32
  [b, m, count]: the `count` most likely allowed tokens at each masked position (the
  vocabulary projection only there)."""
  allowed = jnp.asarray(allowed)

  def top(params, input_ids, attention_mask, positions):
    out = model.apply({"params": params}, input_ids, attention_mask=attention_mask,
                      masked_positions=positions, deterministic=True)
    logits = jnp.where(allowed, out.logits.astype(jnp.float32), -jnp.inf)
    return jax.lax.top_k(logits, count)[1]
  return jax.jit(top)


def word_candidates(texts: Sequence[str], tokenizer, model, params, top_k: int, *, max_length: int = 128,
                    words_per_row: int = 1, batch_size: int = 128,
                    bucket_lengths: Sequence[int] = (16, 32, 64, 128)) -> list:
  """[[Word]] of each text: its words and the top_k candidates of each. MLM rows (see
  _masked_rows; words_per_row=1 is TinyBERT's one masked word at a time) are length-sorted into
  batches of batch_size rows padded to the smallest bucket length that fits (one compilation
  per bucket)."""
  rows, words = _masked_rows(texts, tokenizer, max_length, words_per_row)
  buckets = tuple(sorted(set(int(b) for b in bucket_lengths if b < max_length) | {max_length}))
  top = make_top_tokens(model, allowed_tokens(tokenizer, model.config.vocab_size), top_k + 1)
  order = np.argsort([len(r[0]) for r in rows], kind="stable")
  found = np.zeros((len(words), top_k + 1), np.int32)
  own = np.full(len(words), -1, np.int64)
  for begin in range(0, len(rows), batch_size):
    chosen = order[begin:begin + batch_size]
    length = next(b for b in buckets if b >= len(rows[chosen[-1]][0]))
    input_ids = np.zeros((batch_size, length), np.int32)
    attention_mask = np.zeros((batch_size, length), np.int32)
    positions = np.zeros((batch_size, words_per_row), np.int32)
    for j, r in enumerate(chosen):
      ids, masks = rows[r][0], rows[r][1]
      input_ids[j, :len(ids)], attention_mask[j, :len(ids)], positions[j, :len(masks)] = ids, 1, masks
    top_ids = np.asarray(top(params, input_ids, attention_mask, positions))
    for j, r in enumerate(chosen):
      masked = rows[r][2]
      found[masked], own[masked] = top_ids[j, :len(masked)], rows[r][3]
  tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
  result = [[] for _ in texts]
  for w, (t, start, end) in enumerate(words):
    picked = [tokens[i] for i in found[w] if i != own[w] and i < len(tokens)][:top_k]
    result[t].append(Word(start, end, tuple(picked)))
  return result


# ===================================================================================== variants
def replace_words(text: str, words: Sequence[Word], rng: np.random.Generator, replace_prob: float) -> str:
  """`text` with each word replaced, with probability replace_prob, by one of its candidates
  (uniformly). Two draws per word, whatever happens, so the stream does not depend on them."""
  draws, picks = rng.random(len(words)), rng.random(len(words))
  pieces, cursor = [], 0
  for word, draw, pick in zip(words, draws, picks):
    if draw < replace_prob and word.candidates:
      pieces += [text[cursor:word.start], word.candidates[int(pick * len(word.candidates))]]
      cursor = word.end
  return "".join(pieces) + text[cursor:]


def augment_examples(examples: Examples, words_a: Sequence, words_b: Optional[Sequence], *, num_variants: int,
                     replace_prob: float, seed: int, excluded: frozenset = frozenset()) -> Examples:
  """Up to num_variants distinct variants of each example, in example order, unlabelled.
  words_a[i] (words_b[i]): the Words of examples.text_a[i] (text_b[i])."""
  ids, text_a, text_b, dropped = [], [], [], 0
  for i, a in enumerate(examples.text_a):
    b = examples.text_b[i] if examples.text_b is not None else None
    rng = np.random.default_rng([seed, 0, i])
    seen, kept = {(a, b)}, 0
    for _ in range(num_variants):
      new_a = replace_words(a, words_a[i], rng, replace_prob)
      new_b = replace_words(b, words_b[i], rng, replace_prob) if b is not None else None
      if (new_a, new_b) in seen:
        continue
      seen.add((new_a, new_b))
      if new_a in excluded or new_b in excluded:
        dropped += 1
        continue
      ids.append(f"{examples.ids[i]}/{kept}")
      kept += 1
      text_a.append(new_a)
      text_b.append(new_b)
  if dropped:
    logging.info("augmentation: %d variant(s) equal to a dev or test text dropped", dropped)
  return Examples(ids, text_a, text_b if examples.text_b is not None else None, None, examples.label_names,
                  f"augmented {examples.source}")


def sample_pairs(examples: Examples, count: int, seed: int, excluded: frozenset = frozenset()) -> Examples:
  """Up to `count` new (text_a, text_b) pairs of a pair task, each text drawn uniformly from the
  distinct texts of that side of `examples` (AugSBERT's random sampling); no pair of
  `examples`, no repeat, no text of `excluded`. At most 20 * count draws."""
  if examples.text_b is None:
    raise ValueError(f"{examples.source}: new pairs need a pair task (two texts per example)")
  pool_a = [t for t in dict.fromkeys(examples.text_a) if t not in excluded]
  pool_b = [t for t in dict.fromkeys(examples.text_b) if t not in excluded]
  taken = set(zip(examples.text_a, examples.text_b))
  rng = np.random.default_rng([seed, 1])
  text_a, text_b = [], []
  for _ in range(20 * count if pool_a and pool_b else 0):
    if len(text_a) == count:
      break
    pair = (pool_a[int(rng.integers(len(pool_a)))], pool_b[int(rng.integers(len(pool_b)))])
    if pair not in taken:
      taken.add(pair)
      text_a.append(pair[0])
      text_b.append(pair[1])
  return Examples([f"pair/{j}" for j in range(len(text_a))], text_a, text_b, None, examples.label_names,
                  f"pairs of {examples.source}")


def texts_of(example_sets: Sequence[Examples]) -> frozenset:
  """Every text (text_a and text_b) of the example sets."""
  return frozenset(t for ex in example_sets for t in [*ex.text_a, *(ex.text_b or ())])


# ===================================================================================== the cache
def directory_fingerprint(path: str) -> list:
  """[name, size, modification time in ns] of each file of a model directory, sorted."""
  root = Path(path)
  return sorted([str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns]
                for p in root.rglob("*") if p.is_file())


# The files a Hugging Face tokenizer is read from (weights and model config are not among them).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def tokenizer_fingerprint(path: str) -> dict:
  """{file name: SHA-256 of its bytes} of the tokenizer files of a model directory: a student
  started from the fine-tuned teacher's export tokenizes as the pretrained model it came from,
  whatever its weights and file times, and shares that model's cached teacher outputs."""
  root = Path(path)
  return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()
          for name in TOKENIZER_FILES if (root / name).is_file()}


def cache_key(examples: Examples, settings: dict, mlm_path: str, excluded: frozenset) -> str:
  """24 hex digits of the SHA-256 of everything the augmented set depends on."""
  inputs = {"format_version": FORMAT_VERSION, "text_a": examples.text_a, "text_b": examples.text_b,
            "ids": examples.ids, "excluded": sorted(excluded), "mlm": directory_fingerprint(mlm_path),
            "settings": {k: settings[k] for k in SETTING_NAMES}}
  return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


def build_augmented(examples: Examples, settings: dict, mlm_path: str, excluded: frozenset) -> Examples:
  """The variants of every example, then the new pairs (pair tasks, settings["num_pairs"])."""
  from distilbert_jax import convert  # the MLM is loaded only when the set is not cached
  import transformers
  s = settings
  tokenizer = transformers.AutoTokenizer.from_pretrained(mlm_path)
  model, params = convert.load_pretrained(mlm_path, head="masked_lm")
  texts = list(dict.fromkeys([*examples.text_a, *(examples.text_b or ())]))
  by_text = dict(zip(texts, word_candidates(texts, tokenizer, model, params, s["top_k"],
                                            max_length=s["mlm_max_length"], words_per_row=s["words_per_row"])))
  words_b = [by_text[t] for t in examples.text_b] if examples.text_b is not None else None
  variants = augment_examples(examples, [by_text[t] for t in examples.text_a], words_b,
                              num_variants=s["num_variants"], replace_prob=s["replace_prob"], seed=s["seed"],
                              excluded=excluded)
  if examples.text_b is None or s["num_pairs"] <= 0:
    return variants
  pairs = sample_pairs(examples, s["num_pairs"], s["seed"], excluded)
  return Examples(variants.ids + pairs.ids, variants.text_a + pairs.text_a, variants.text_b + pairs.text_b, None,
                  examples.label_names, variants.source)


def augmented_examples(examples: Examples, settings: dict, mlm_path: str, cache_dir,
                       excluded: frozenset = frozenset()) -> tuple[Examples, str]:
  """(the augmented set of `examples`, its cache key): read from cache_dir/augmented-KEY.jsonl
  when there, else built (build_augmented) and written there once, atomically. cache_dir: a
  local path or a storage URI (gs://)."""
  key = cache_key(examples, settings, mlm_path, excluded)
  path = storage.path(cache_dir) / f"augmented-{key}.jsonl"
  if path.is_file():
    logging.info("augmented set %s reused", path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    text_b = [r["text_b"] for r in rows] if examples.text_b is not None else None
    return Examples([r["id"] for r in rows], [r["text_a"] for r in rows], text_b, None, examples.label_names,
                    str(path)), key
  augmented = build_augmented(examples, settings, mlm_path, excluded)
  with atomic.writing(path, "w") as f:
    for i, a in enumerate(augmented.text_a):
      b = augmented.text_b[i] if augmented.text_b is not None else None
      f.write(json.dumps({"id": augmented.ids[i], "text_a": a, "text_b": b}, ensure_ascii=False) + "\n")
  logging.info("augmented set: %d examples from %d, written to %s", len(augmented), len(examples), path)
  return augmented, key


def cached_array(path, compute: Callable[[], np.ndarray]) -> np.ndarray:
  """The array in the .npy file `path`, or compute() written there once, atomically."""
  path = storage.path(path)
  if path.is_file():
    with path.open("rb") as f:
      return np.load(f)
  array = np.asarray(compute())
  with atomic.writing(path, "wb") as f:
    np.save(f, array)
  return array


def array_key(*parts) -> str:
  """24 hex digits of the SHA-256 of the JSON of `parts` (for cached_array's file names)."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]

