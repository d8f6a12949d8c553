"""A masked-LM head for a frozen encoder that ships without one (all-MiniLM-L6-v2), for the
data augmentation of task distillation (tasks/augmentation.py, config.augment.mlm_path).

  python scripts/train_mlm_head.py --glue GLUE_DIR --out MLM_DIR [--encoder DIR] \
      [--max-sentences 40000] [--epochs 4]

Trains only BERT's `cls/predictions` (dense, LayerNorm, output bias; the output matrix is the
encoder's word embeddings, tied and frozen) on the training sentences of the GLUE tasks under
GLUE_DIR. SST-2 and STS-B lose the 10% of train.tsv that finetune's data.holdout_fraction=0.1
holds out for evaluation (seed 0), and no text of any dev set is used. The encoder is frozen, so
its last hidden state at each masked position is computed once, with BERT's masking (15% of the
tokens; 80% [MASK], 10% a random token, 10% kept), and the head trains on those. A seeded 2% of
the sentences is held out and scored: top-1 and top-15 accuracy of the masked tokens. Writes
MLM_DIR as a Hugging Face BertForMaskedLM directory with the encoder's tokenizer, and
MLM_DIR/mlm_head.json with the accuracies and the timings.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_common  # noqa: E402
from configs.tiny import minilm_dir  # noqa: E402
from distilbert_jax import atomic, convert, models  # noqa: E402
from distilbert_jax.models import bert  # noqa: E402
from glue_corpus import training_sentences  # noqa: E402

MASK_RATE = 0.15
BUCKETS = (16, 32, 64)


def masked_batches(texts, tokenizer, rng, batch_size: int = 64):
  """Yields (input_ids [b, L], attention_mask [b, L], positions [b, P], targets [b, P], weights
  [b, P]): BERT's masking of each text, P = 15% of L rounded up."""
  encoded = tokenizer(texts, truncation=True, max_length=BUCKETS[-1], padding=False)["input_ids"]
  special = set(tokenizer.all_special_ids)
  order = np.argsort([len(e) for e in encoded], kind="stable")
  for begin in range(0, len(order), batch_size):
    rows = [encoded[i] for i in order[begin:begin + batch_size]]
    length = next(b for b in BUCKETS if b >= max(len(r) for r in rows))
    slots = int(np.ceil(MASK_RATE * length))
    ids, mask = np.zeros((len(rows), length), np.int32), np.zeros((len(rows), length), np.int32)
    positions, targets = np.zeros((len(rows), slots), np.int32), np.zeros((len(rows), slots), np.int32)
    weights = np.zeros((len(rows), slots), np.float32)
    for j, row in enumerate(rows):
      ids[j, :len(row)], mask[j, :len(row)] = row, 1
      candidates = [k for k, t in enumerate(row) if t not in special]
      count = min(slots, max(1, int(round(MASK_RATE * len(candidates)))))
      chosen = np.sort(rng.choice(candidates, count, replace=False))
      positions[j, :count], targets[j, :count], weights[j, :count] = chosen, ids[j, chosen], 1.0
      draw = rng.random(count)
      ids[j, chosen[draw < 0.8]] = tokenizer.mask_token_id
      random_rows = chosen[(draw >= 0.8) & (draw < 0.9)]
      ids[j, random_rows] = rng.integers(len(tokenizer), size=len(random_rows))
    yield ids, mask, positions, targets, weights


def encoder_states(model, params, texts, tokenizer, seed: int):
  """(hidden [n, H] float32 at the masked positions, targets [n]) of the frozen encoder's
  last layer."""
  @jax.jit
  def states(input_ids, attention_mask, positions):
    out = model.apply({"params": params}, input_ids, attention_mask=attention_mask, deterministic=True)
    return jnp.take_along_axis(out.last_hidden_state, positions[..., None], axis=1)

  hidden, targets = [], []
  for ids, mask, positions, target, weight in masked_batches(texts, tokenizer, np.random.default_rng(seed)):
    h = np.asarray(states(ids, mask, positions))
    keep = weight > 0
    hidden.append(h[keep])
    targets.append(target[keep])
  return np.concatenate(hidden), np.concatenate(targets)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--glue", required=True, help="GLUE_DIR, in the GLUE download script's layout")
  parser.add_argument("--out", required=True, help="the MLM directory to write")
  parser.add_argument("--encoder", default="", help="the frozen encoder (default: all-MiniLM-L6-v2)")
  parser.add_argument("--max-sentences", type=int, default=40000)
  parser.add_argument("--epochs", type=float, default=4.0)
  parser.add_argument("--batch-size", type=int, default=256, help="masked positions per step")
  parser.add_argument("--learning-rate", type=float, default=2e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--layers", type=int, default=0,
                      help="keep only the encoder's first this many layers (a smaller, faster MLM); 0: all")
  args = parser.parse_args(argv)
  import transformers
  encoder = args.encoder or minilm_dir()
  tokenizer = transformers.AutoTokenizer.from_pretrained(encoder)
  model, params = convert.load_pretrained(encoder, head="masked_lm", init_missing_heads=True,
                                          rng=jax.random.PRNGKey(args.seed))
  if args.layers:
    config, params = convert.student_from_teacher(model.config, params, teacher_head="masked_lm",
                                                  layers=tuple(range(args.layers)), student_type="bert")
    model = models.get_model(config, "masked_lm")
  base = bert.BertModel(config=model.config, add_pooling_layer=False)

  texts = training_sentences(args.glue)
  order = np.random.default_rng(args.seed).permutation(len(texts))
  n_eval = max(1, len(texts) // 50)
  eval_texts = [texts[i] for i in order[:n_eval]]
  train_texts = [texts[i] for i in order[n_eval:n_eval + args.max_sentences]]
  start = time.perf_counter()
  train_h, train_t = encoder_states(base, params["bert"], train_texts, tokenizer, args.seed)
  eval_h, eval_t = encoder_states(base, params["bert"], eval_texts, tokenizer, args.seed + 1)
  encode_seconds = time.perf_counter() - start
  print(f"{len(train_texts)} training sentences ({len(train_t)} masked tokens), {len(eval_texts)} held out "
        f"({len(eval_t)}); encoder states in {encode_seconds:.0f} s", flush=True)

  head = bert._Cls(config=model.config)  # pylint: disable=protected-access
  embedding = jnp.asarray(params["bert"]["embeddings"]["word_embeddings"]["embedding"])
  logits_of = lambda head_params, hidden: head.apply({"params": head_params}, hidden, None, embedding)[0]
  steps = int(args.epochs * len(train_t) / args.batch_size)
  schedule = optax.warmup_cosine_decay_schedule(0.0, args.learning_rate, max(steps // 20, 1), steps)
  tx = optax.adamw(schedule, weight_decay=0.01)
  head_params = params["cls"]
  opt_state = tx.init(head_params)

  @jax.jit
  def step(head_params, opt_state, hidden, targets):
    def loss_fn(p):
      log_probs = jax.nn.log_softmax(logits_of(p, hidden))
      return -jnp.mean(jnp.take_along_axis(log_probs, targets[:, None], axis=-1))
    loss, grads = jax.value_and_grad(loss_fn)(head_params)
    updates, opt_state = tx.update(grads, opt_state, head_params)
    return optax.apply_updates(head_params, updates), opt_state, loss

  @jax.jit
  def top15(head_params, hidden):
    return jax.lax.top_k(logits_of(head_params, hidden), 15)[1]

  def accuracy(head_params) -> tuple[float, float]:
    found = np.concatenate([np.asarray(top15(head_params, eval_h[i:i + 1024])) for i in range(0, len(eval_h), 1024)])
    return float(np.mean(found[:, 0] == eval_t)), float(np.mean((found == eval_t[:, None]).any(axis=1)))

  rng = np.random.default_rng(args.seed)
  start = time.perf_counter()
  for k in range(steps):
    if k % (len(train_t) // args.batch_size) == 0:
      perm = rng.permutation(len(train_t))
    rows = perm[(k % (len(train_t) // args.batch_size)) * args.batch_size:][:args.batch_size]
    head_params, opt_state, loss = step(head_params, opt_state, train_h[rows], train_t[rows])
    if k % 500 == 0 or k == steps - 1:
      print(f"step {k}/{steps} loss {float(loss):.3f} held-out top-1/top-15 {accuracy(head_params)}", flush=True)
  train_seconds = time.perf_counter() - start
  top1, top15_accuracy = accuracy(head_params)
  params = dict(params, cls=head_params)
  convert.save_pretrained(model, params, args.out, tokenizer_dir=encoder,
                          overwrite=True)
  report = dict(encoder=str(encoder), layers=model.config.num_hidden_layers, training_sentences=len(train_texts),
                training_masked_tokens=int(len(train_t)),
                heldout_sentences=len(eval_texts), heldout_masked_tokens=int(len(eval_t)), steps=steps,
                heldout_top1=top1, heldout_top15=top15_accuracy, encoder_seconds=round(encode_seconds, 1),
                train_seconds=round(train_seconds, 1), processor=bench_common.cpu_name(),
                cpu_threads=bench_common.cpu_threads())
  atomic.write_text(Path(args.out) / "mlm_head.json", json.dumps(report, indent=2) + "\n")
  print(json.dumps(report, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
