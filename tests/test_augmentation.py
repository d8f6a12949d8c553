"""TinyBERT data augmentation (tasks/augmentation.py, jobs/augmented.py) on a tiny random MLM
with MiniLM's tokenizer: determinism, the replacement rate, dev-text exclusion, new pairs from
the task's own texts, the cache, and the loss on cached teacher outputs."""
import os
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from distilbert_jax import convert, errors, jobs
from distilbert_jax.jobs import augmented, finetune, task_loss
from distilbert_jax.tasks import augmentation, glue
from configs import glue as glue_config

SENTENCES = ["the cat sat on a mat and the dog ran to the park with his old red ball",
             "my sister made a cake for the party and we ate it in the garden last night",
             "he read the book in one day and then gave it to his friend at school",
             "they drove to the city to see a new film about a man and his horse",
             "she put the milk in the box and left the house before the rain came down"]
SETTINGS = dict(num_variants=20, top_k=15, replace_prob=0.4, num_pairs=0, seed=0, mlm_max_length=64,
                words_per_row=1)
POSITIVE = ["a good film", "good acting and a good story", "truly good", "the food was good", "good fun",
            "so good", "a good day", "good music", "very good indeed", "good and warm"]
NEGATIVE = ["a bad film", "bad acting and a bad story", "truly bad", "the food was bad", "bad fun",
            "so bad", "a bad day", "bad music", "very bad indeed", "bad and cold"]


def _tiny(path, model_class, minilm, **config_fields):
  """A random 2-layer BERT of `model_class` with MiniLM's vocabulary and tokenizer at `path`."""
  import torch
  import transformers
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64, **config_fields)
  model_class(config).save_pretrained(path)
  for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    if (Path(minilm) / name).exists():
      shutil.copy(Path(minilm) / name, Path(path) / name)
  return str(path)


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory, minilm):
  import transformers
  return _tiny(tmp_path_factory.mktemp("tiny_mlm"), transformers.BertForMaskedLM, minilm)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, minilm):
  """A random sentiment classifier (labels neg, pos: the sorted labels of the training file)."""
  import transformers
  return _tiny(tmp_path_factory.mktemp("tiny_teacher"), transformers.BertForSequenceClassification, minilm,
               id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})


def _examples(text_a, text_b=None):
  return glue.Examples([str(i) for i in range(len(text_a))], list(text_a), None if text_b is None else list(text_b),
                       None, None, "test")


def test_the_same_seed_gives_a_byte_identical_set_and_another_seed_another(tiny_mlm, tmp_path):
  examples = _examples(SENTENCES)
  files = []
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    augmentation.augmented_examples(examples, dict(SETTINGS, seed=seed), tiny_mlm, tmp_path / name)
    files.append(next((tmp_path / name).glob("augmented-*.jsonl")).read_bytes())
  assert files[0] == files[1]
  assert files[0] != files[2]
  assert files[0].count(b"\n") > 4 * len(SENTENCES)  # most of the 20 draws differ


def test_each_word_is_replaced_with_probability_p_by_another_word(tiny_mlm):
  import transformers
  tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_mlm)
  model, params = convert.load_pretrained(tiny_mlm, head="masked_lm")
  words = augmentation.word_candidates(SENTENCES, tokenizer, model, params, top_k=15, batch_size=16)
  assert all(len(w.candidates) == 15 and SENTENCES[i][w.start:w.end] not in w.candidates
             and not set(w.candidates) & augmentation.STOP_WORDS for i, ws in enumerate(words) for w in ws)
  p = 0.4
  variants = augmentation.augment_examples(_examples(SENTENCES), words, None, num_variants=60, replace_prob=p, seed=3)
  changed = total = 0
  for id_, text in zip(variants.ids, variants.text_a):
    original = SENTENCES[int(id_.split("/")[0])].split()
    new = text.split()
    assert len(new) == len(original)  # every candidate is one whole word
    assert all(a == b for a, b in zip(original, new) if a in augmentation.STOP_WORDS)
    changed += sum(a != b for a, b in zip(original, new))
    total += sum(a not in augmentation.STOP_WORDS for a in original)
  # Binomial rate of `total` (~2,700) independent words: 4 standard deviations is about 0.038.
  assert abs(changed / total - p) < 4 * np.sqrt(p * (1 - p) / total)


def test_a_word_of_several_pieces_is_masked_as_one_and_replaced_whole(tiny_mlm):
  import transformers
  tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_mlm)
  model, params = convert.load_pretrained(tiny_mlm, head="masked_lm")
  text = "the xylophonists play, loudly. they won't"
  assert len(tokenizer.tokenize("xylophonists")) > 1
  (words,) = augmentation.word_candidates([text], tokenizer, model, params, top_k=5)
  # Neither punctuation, a stop word nor a part of a contraction is a word to replace.
  assert [text[w.start:w.end] for w in words] == ["xylophonists", "play", "loudly"]
  replaced = augmentation.replace_words(text, words, np.random.default_rng(0), 1.0)
  match = re.fullmatch(r"the (\S+) (\S+), (\S+)\. they won't", replaced)  # every word replaced, the rest kept
  assert match and all(match.group(i + 1) in words[i].candidates for i in range(3))


def test_variants_equal_to_a_dev_or_test_text_are_dropped(tiny_mlm, tmp_path):
  examples = _examples(SENTENCES[:2], SENTENCES[2:4])
  first, _ = augmentation.augmented_examples(examples, SETTINGS, tiny_mlm, tmp_path / "a")
  dev_texts = frozenset([first.text_a[0], first.text_b[3], first.text_a[-1]])
  second, _ = augmentation.augmented_examples(examples, SETTINGS, tiny_mlm, tmp_path / "b", excluded=dev_texts)
  pairs = lambda ex: set(zip(ex.text_a, ex.text_b))
  assert pairs(second) == {(a, b) for a, b in pairs(first) if a not in dev_texts and b not in dev_texts}
  assert len(second) == len(first) - 3


def test_new_pairs_are_drawn_from_the_tasks_own_training_texts_only():
  text_a = [f"premise {i}" for i in range(30)]
  text_b = [f"hypothesis {i}" for i in range(30)]
  dev_texts = frozenset(["premise 3", "hypothesis 7"])
  pairs = augmentation.sample_pairs(_examples(text_a, text_b), 200, seed=0, excluded=dev_texts)
  assert len(pairs) == 200
  assert set(pairs.text_a) <= set(text_a) - dev_texts and set(pairs.text_b) <= set(text_b) - dev_texts
  new = list(zip(pairs.text_a, pairs.text_b))
  assert len(set(new)) == 200 and not set(new) & set(zip(text_a, text_b))
  again = augmentation.sample_pairs(_examples(text_a, text_b), 200, seed=0, excluded=dev_texts)
  assert list(zip(again.text_a, again.text_b)) == new
  with pytest.raises(ValueError, match="pair task"):
    augmentation.sample_pairs(_examples(text_a), 5, seed=0)


def test_a_second_run_reads_the_cache_and_does_not_run_the_mlm(tiny_mlm, tmp_path, monkeypatch):
  examples = _examples(SENTENCES)
  first, key = augmentation.augmented_examples(examples, SETTINGS, tiny_mlm, tmp_path)

  def fail(*args, **kwargs):
    raise AssertionError("the augmented set was built again")
  monkeypatch.setattr(augmentation, "build_augmented", fail)
  second, key_again = augmentation.augmented_examples(examples, SETTINGS, tiny_mlm, tmp_path)
  assert key_again == key and (second.ids, second.text_a) == (first.ids, first.text_a)
  with pytest.raises(AssertionError, match="built again"):  # other settings: another key
    augmentation.augmented_examples(examples, dict(SETTINGS, replace_prob=0.3), tiny_mlm, tmp_path)


class _CountingTeacher:
  """A teacher model that counts its calls."""

  def __init__(self, model):
    self.model, self.config, self.calls = model, model.config, 0

  def apply(self, *args, **kwargs):
    self.calls += 1
    return self.model.apply(*args, **kwargs)


def test_cached_teacher_logits_replace_the_teacher_and_give_the_hand_computed_loss(tiny_teacher):
  import transformers
  student, params = convert.load_pretrained(tiny_teacher, head="sequence_classification")
  teacher = _CountingTeacher(student)
  config = glue_config.get_config()
  config.loss.alpha_kd, config.loss.temperature = 1.0, 2.0
  loss = task_loss.TaskLoss(config, student, teacher, "classification", ())
  tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_teacher)
  batch = glue.encode(_examples(POSITIVE[:4]), tokenizer, 16)
  del batch["lengths"]
  batch["labels"] = np.array([1, 0, 1, 1], np.int32)
  batch["teacher_logits"] = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
  batch["task_weight"] = np.array([1, 0, 1, 0], np.float32)
  rng = jax.random.PRNGKey(1)

  def sums_and_logits(p, b):  # the student's logits under the same dropout, for the reference
    logits = student.apply({"params": p}, b["input_ids"], attention_mask=b["attention_mask"],
                           token_type_ids=b["token_type_ids"], deterministic=False, rngs={"dropout": rng}).logits
    return loss.loss_sums(p, p, b, rng), logits
  sums, logits = jax.jit(sums_and_logits)(params, batch)
  denominators = loss.denominators(batch)
  assert teacher.calls == 0
  jax.eval_shape(loss.loss_sums, params, params, {k: v for k, v in batch.items() if k != "teacher_logits"}, rng)
  assert teacher.calls == 1  # without cached logits the teacher runs (the count sees it)
  s = np.asarray(logits, np.float64)
  log_softmax = lambda x: x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1,
                                                                                                          keepdims=True)
  w = batch["task_weight"].astype(np.float64)
  task = -np.sum(w * log_softmax(s)[np.arange(4), batch["labels"]])
  t_log = log_softmax(batch["teacher_logits"].astype(np.float64) / 2.0)
  kd = 4.0 * np.sum(np.exp(t_log) * (t_log - log_softmax(s / 2.0)))
  np.testing.assert_allclose(float(sums["task"]), task, rtol=2e-5)
  np.testing.assert_allclose(float(sums["kd"]), kd, rtol=2e-5)
  assert float(denominators["task"]) == 2.0 and float(denominators["kd"]) == 4.0


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
  path = tmp_path_factory.mktemp("sentiment")
  rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
  (path / "train.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows))
  (path / "dev.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows[::5]))
  return path


def _augment_config(tiny_teacher, tiny_mlm, sentiment, **fields):
  config = glue_config.get_config()
  config.task = "custom"
  config.model.path = config.teacher.path = tiny_teacher
  config.data.train, config.data.eval = str(sentiment / "train.tsv"), str(sentiment / "dev.tsv")
  config.data.max_length, config.data.bucket_lengths = 16, (8, 16)
  config.loss.alpha_kd = 1.0
  config.augment.num_variants, config.augment.mlm_path = 5, tiny_mlm
  config.train.batch_size, config.train.num_steps, config.train.log_every = 8, 4, 2
  config.train.checkpoint_every, config.train.progress_bar, config.export = 4, False, False
  config.eval.batch_size = 4
  for key, value in fields.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


@pytest.mark.slow
def test_a_run_trains_on_cached_teacher_outputs_without_a_teacher_in_the_step(tiny_teacher, tiny_mlm, sentiment,
                                                                               tmp_path, monkeypatch):
  config = _augment_config(tiny_teacher, tiny_mlm, sentiment)
  metrics = jobs.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics["loss_kd"]) and np.isfinite(metrics["loss_task"])
  cached = sorted(p.name.split("-")[0] for p in (tmp_path / "augment").iterdir())
  assert cached == ["augmented", "teacher"]
  dev_texts = set((sentiment / "dev.tsv").read_text().split("\n"))
  rows = next((tmp_path / "augment").glob("augmented-*.jsonl")).read_text().splitlines()
  assert rows and not any(r.split('"text_a": "')[1].split('"')[0] in dev_texts for r in rows)

  calls = []
  original = finetune.build_teacher
  monkeypatch.setattr(finetune, "build_teacher", lambda *a: calls.append(1) or original(*a))
  job = finetune.make_job(config, tmp_path)  # the same settings again: everything from the cache
  assert job.frozen_model is None and job.frozen_params is None and not calls
  batch = next(job.iterator)
  assert batch["teacher_logits"].shape == (8, 2) and batch["input_ids"].shape[0] == 8
  assert len(job.iterator.lengths) > len(POSITIVE + NEGATIVE)
  teacher_logits = np.load(next((tmp_path / "augment").glob("teacher-*.npy")))
  assert teacher_logits.shape == (len(job.iterator.lengths), 2)


@pytest.mark.parametrize("field, value, fragment", [
    ("loss.alpha_kd", 0.0, "loss.alpha_kd is 0"),
    ("teacher.path", "", "teacher.path is empty"),
    ("augment.replace_prob", 1.5, "augment.replace_prob=1.5"),
    ("augment.phase", "both", "augment.phase='both'"),
    ("augment.num_pairs", 10, "new pairs need a pair task"),
    ("augment.mlm_path", "", "augment.mlm_path is empty"),
    ("augment.words_per_row", 0, "augment.words_per_row=0"),
])
def test_bad_augment_settings_are_one_line_errors(tiny_teacher, tiny_mlm, sentiment, field, value, fragment):
  config = _augment_config(tiny_teacher, tiny_mlm, sentiment, **{field: value})
  with pytest.raises(errors.ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")) as e:
    finetune.check_config(config)
  assert "\n" not in str(e.value)


def test_phase_kd_gives_every_row_task_weight_zero(tiny_teacher, tiny_mlm, sentiment, tmp_path):
  config = _augment_config(tiny_teacher, tiny_mlm, sentiment, **{"augment.phase": "kd"})
  _, iterator, _ = finetune.build_data(config, tmp_path)
  assert not iterator.arrays["task_weight"].any()
  assert augmented.is_augmenting(config)


def test_the_compiled_step_of_an_augmented_run_takes_teacher_outputs_and_no_teacher(tiny_teacher, tiny_mlm, sentiment):
  config = _augment_config(tiny_teacher, tiny_mlm, sentiment)
  job = finetune.make_abstract_job(config, "cpu")
  spec = job.batch_spec(8, 16)
  assert job.frozen_model is None and spec["teacher_logits"].shape == (8, 2) and spec["task_weight"].shape == (8,)
  config.augment.num_variants = 0
  assert finetune.make_abstract_job(config, "cpu").frozen_model is not None


def test_layer_losses_on_augmented_data_run_the_teacher_in_the_step_and_cache_no_logits(tiny_teacher, tiny_mlm,
                                                                                         sentiment, tmp_path):
  config = _augment_config(tiny_teacher, tiny_mlm, sentiment, **{"loss.alpha_hidden": 1.0, "loss.alpha_attention": 1.0})
  config.model.layers = (1,)
  job = finetune.make_job(config, tmp_path)
  assert job.frozen_model is not None and augmented.teacher_in_step(config)
  assert sorted(p.name.split("-")[0] for p in (tmp_path / "augment").iterdir()) == ["augmented"]
  arrays = job.iterator.arrays
  assert "teacher_logits" not in arrays and len(arrays["task_weight"]) > len(POSITIVE + NEGATIVE)
  spec = finetune.make_abstract_job(config, "cpu").batch_spec(8, 16)
  assert "teacher_logits" not in spec and spec["task_weight"].shape == (8,)

  # A batch of augmented rows alone (task_weight 0): the live teacher's loss_kd equals the loss
  # on its cached logits (the augmented path without layer losses), and the layer losses are there.
  rows = np.flatnonzero(arrays["task_weight"] == 0)[:8]
  batch = {k: v[rows] for k, v in arrays.items() if k != "lengths"}
  rng = jax.random.PRNGKey(0)
  sums = jax.jit(job.loss_sums)(job.params, job.frozen_params, batch, rng)
  assert float(sums["task"]) == 0.0 and float(sums["hidden"]) > 0 and float(sums["attention"]) > 0
  outputs = job.frozen_model.apply({"params": job.frozen_params}, batch["input_ids"],
                                   attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"])
  cached = dict(batch, teacher_logits=np.asarray(outputs.logits, np.float32))
  cached_sums = jax.jit(job.loss_sums)(job.params, job.frozen_params, cached, rng)
  assert set(cached_sums) == {"task", "kd"}
  np.testing.assert_allclose(float(sums["kd"]), float(cached_sums["kd"]), rtol=1e-5)


def test_words_masked_together_get_candidates_of_their_own(tiny_mlm):
  import transformers
  tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_mlm)
  model, params = convert.load_pretrained(tiny_mlm, head="masked_lm")
  one = augmentation.word_candidates(SENTENCES, tokenizer, model, params, top_k=15)
  rows, _ = augmentation._masked_rows(SENTENCES, tokenizer, 128, 3)  # pylint: disable=protected-access
  assert len(rows) == sum(-(-len(w) // 3) for w in one)
  assert all(np.sum(row == tokenizer.mask_token_id) == len(masked) <= 3 for row, _, masked, _ in rows)
  three = augmentation.word_candidates(SENTENCES, tokenizer, model, params, top_k=15, words_per_row=3)
  assert [[(w.start, w.end) for w in ws] for ws in three] == [[(w.start, w.end) for w in ws] for ws in one]
  assert all(len(w.candidates) == 15 for ws in three for w in ws)
  # The other masks of a row change some of the guesses.
  same = np.mean([a.candidates == b.candidates for x, y in zip(one, three) for a, b in zip(x, y)])
  assert same < 1


def test_the_teacher_outputs_key_reads_the_tokenizer_files_not_the_weights(tmp_path):
  pretrained, finetuned = tmp_path / "pretrained", tmp_path / "finetuned"
  for d, weights in ((pretrained, b"pretrained"), (finetuned, b"fine-tuned, written later")):
    d.mkdir()
    (d / "model.safetensors").write_bytes(weights)
    (d / "config.json").write_text("{}")
    (d / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n")
    (d / "tokenizer_config.json").write_text('{"do_lower_case": true}')
  os.utime(finetuned / "vocab.txt", ns=(10 ** 9, 10 ** 9))
  same = augmentation.tokenizer_fingerprint(str(pretrained))
  assert same == augmentation.tokenizer_fingerprint(str(finetuned))
  assert sorted(same) == ["tokenizer_config.json", "vocab.txt"]
  (finetuned / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\na\n")
  assert augmentation.tokenizer_fingerprint(str(finetuned)) != same
