"""The attention (TinyBERT) and relation (MiniLMv2) losses in the fine-tuning and distillation
jobs: their sums are attention_losses' on the models' own outputs, their gradients reach the
student's attention projections, they are logged and fall in a real run, and a setting that does
not fit the models is a one-line ConfigError.

Student: one layer of the tiny random BERT (32 wide, 4 heads); teacher: a random 2-layer BERT
classifier 48 wide with 4 heads (other widths, equal heads), relation heads 2 (not the head count).
Tolerance of the sums against direct calls: rtol 1e-6 (the same float32 operations).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import copy_tokenizer, read_metrics
from distilbert_jax import attention_losses, errors, jobs
from distilbert_jax.jobs import checks, distill, finetune, task_loss
import test_finetune
from test_finetune import sentiment_config

sentiment = test_finetune.sentiment  # the fixture: a separable two-class table


@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory, tiny_bert):
  """A random 2-layer BERT sequence classifier, 48 wide, 4 heads, MiniLM's vocabulary and tokenizer.
  Weights 10x the usual scale (0.2), so that its attention is far from uniform: a student of
  0.02-scale weights then starts far from it."""
  import torch
  import transformers
  torch.manual_seed(1)
  config = transformers.BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64, num_labels=2, initializer_range=0.2,
                                   id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
  path = tmp_path_factory.mktemp("wide_teacher")
  transformers.BertForSequenceClassification(config).save_pretrained(path)
  copy_tokenizer(tiny_bert, path)
  return str(path)


def layer_config(tiny_bert, sentiment, teacher, **overrides):
  config = sentiment_config(tiny_bert, sentiment, **{"train.num_steps": 8, "train.log_every": 1,
                                                     "train.eval_every": 100, "export": False})
  config.model.layers = (1,)  # the student: the tiny BERT's second layer
  config.teacher.path = teacher
  config.loss.alpha_task = 0.0
  config.loss.alpha_attention = 1.0
  config.loss.alpha_relation = 1.0
  config.loss.relation_heads = 2
  config.loss.hidden_layer_map = ((1, 2),)
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def built_loss(config):
  data, iterator, _ = finetune.build_data(config)
  kind, num_outputs, label_names = finetune.task_outputs(config, data.task)
  student, params, teacher, teacher_params = finetune.build_models(config, label_names, num_outputs)
  return task_loss.build_loss(config, kind, student, teacher), params, teacher_params, next(iterator)


def models_qkv(loss, params, teacher_params, batch):
  """The attention_qkv of the student as the step runs it (dropout on, from the step's key 0)
  and of the teacher, on batch."""
  kw = dict(attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"], output_qkv=True)
  student = jax.jit(lambda p, ids: loss.student.apply({"params": p}, ids, deterministic=False,
                                                      rngs={"dropout": jax.random.PRNGKey(0)}, **kw))(
      params, batch["input_ids"]).attention_qkv
  teacher = jax.jit(lambda p, ids: loss.teacher.apply({"params": p}, ids, **kw))(
      teacher_params, batch["input_ids"]).attention_qkv
  return student, teacher


def test_task_loss_sums_are_the_attention_losses_of_the_models_outputs(tiny_bert, sentiment, wide_teacher):
  config = layer_config(tiny_bert, sentiment, wide_teacher)
  finetune.check_config(config)
  loss, params, teacher_params, batch = built_loss(config)
  assert loss.attention_pairs == ((0, 1),) and loss.relation_pairs == ((0, 1),) and loss.relation_heads == 2
  sums = jax.jit(loss.loss_sums)(params, teacher_params, batch, jax.random.PRNGKey(0))
  assert set(sums) == {"task", "attention", "relation"}
  mask = batch["attention_mask"]
  student, teacher = models_qkv(loss, params, teacher_params, batch)
  assert student[0][0].shape[-2:] == (4, 8) and teacher[1][0].shape[-2:] == (4, 12)
  expected = attention_losses.attention_score_loss(*student[0][:2], *teacher[1][:2], mask)[0]
  np.testing.assert_allclose(float(sums["attention"]), float(expected), rtol=1e-6)
  expected = attention_losses.relations_loss(student[0], teacher[1], mask, 2)[0]
  np.testing.assert_allclose(float(sums["relation"]), float(expected), rtol=1e-6)
  denominators = loss.denominators(batch)
  real = np.asarray(mask).sum(-1)
  np.testing.assert_allclose(float(denominators["attention"]), float((real ** 2).sum() * 4), rtol=0)
  np.testing.assert_allclose(float(denominators["relation"]), float(real.sum() * 2), rtol=0)
  for name in ("attention", "relation"):
    assert np.isfinite(float(sums[name])) and float(sums[name]) > 0, name


@pytest.mark.parametrize("name", ["attention", "relation"])
def test_each_layer_loss_has_a_gradient_on_the_students_attention(tiny_bert, sentiment, wide_teacher, name):
  config = layer_config(tiny_bert, sentiment, wide_teacher,
                        **{f"loss.alpha_{other}": 0.0 for other in ("attention", "relation") if other != name})
  loss, params, teacher_params, batch = built_loss(config)
  grads = jax.jit(jax.grad(lambda p: loss.loss_sums(p, teacher_params, batch, jax.random.PRNGKey(0))[name]))(params)
  attention = grads["bert"]["encoder"]["layer"]["0"]["attention"]["self"]
  used = ("query", "key") if name == "attention" else ("query", "key", "value")
  for projection in used:
    assert np.abs(np.asarray(attention[projection]["kernel"])).max() > 1e-6, projection
  # The classifier is not on the path from the inputs to the attention.
  assert np.all(np.asarray(grads["classifier"]["kernel"]) == 0)


@pytest.mark.slow
def test_finetune_logs_falling_attention_and_relation_losses(tiny_bert, sentiment, wide_teacher, tmp_path):
  config = layer_config(tiny_bert, sentiment, wide_teacher)
  jobs.train_and_evaluate(config, str(tmp_path))
  metrics = [m for m in read_metrics(tmp_path) if "loss_relation" in m]
  assert len(metrics) == config.train.num_steps
  for name in ("loss_attention", "loss_relation"):
    values = [m[name] for m in metrics]
    assert all(np.isfinite(values)) and values[0] > 0, (name, values)
    # Batches and dropout differ step to step: the mean of the last three against the first.
    assert np.mean(values[-3:]) < 0.8 * values[0], (name, values)
  # alpha_task is 0: the loss is the two layer losses alone.
  assert all(m["loss"] == pytest.approx(m["loss_attention"] + m["loss_relation"], rel=1e-5) for m in metrics)


@pytest.mark.parametrize("overrides,fragment", [
    ({"loss.alpha_relation": -1.0}, "loss.alpha_relation=-1.0 must be >= 0"),
    ({"loss.relation_heads": -2}, "loss.relation_heads=-2 must be >= 0"),
    ({"loss.relation_layers": ((0,),)}, "must hold (student layer, teacher layer) pairs"),
])
def test_bad_layer_loss_fields_are_config_errors_before_any_model(tiny_bert, sentiment, wide_teacher, overrides,
                                                                  fragment):
  with pytest.raises(errors.ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as raised:
    finetune.check_config(layer_config(tiny_bert, sentiment, wide_teacher, **overrides))
  assert "\n" not in str(raised.value)


@pytest.mark.parametrize("overrides,fragment", [
    ({"loss.relation_heads": 5}, "loss.relation_heads=5 does not divide the student's width 32"),
    ({"loss.relation_layers": ((0, 2),)}, "loss.relation_layers: the pair (0, 2) is outside"),
    ({"loss.hidden_layer_map": ((0, 0),)}, "pairs no layers past the embeddings"),
])
def test_layer_losses_that_do_not_fit_the_models_are_config_errors(tiny_bert, sentiment, wide_teacher, overrides,
                                                                   fragment):
  config = layer_config(tiny_bert, sentiment, wide_teacher, **overrides)
  with pytest.raises(errors.ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as raised:
    built_loss(config)
  assert "\n" not in str(raised.value)


def hidden_config(tiny_bert, sentiment, teacher, **overrides):
  """loss_hidden alone, the student's layer output (index 1) against the teacher's last (2)."""
  return layer_config(tiny_bert, sentiment, teacher, **{"loss.alpha_attention": 0.0, "loss.alpha_relation": 0.0,
                                                        "loss.alpha_hidden": 1.0, **overrides})


def test_a_student_of_another_width_is_projected_to_the_teacher_by_a_learned_w_h(tiny_bert, sentiment, wide_teacher,
                                                                               tmp_path):
  """TinyBERT's eq. 7, MSE(H_S W_h, H_T), in float64 NumPy on the models' own hidden states
  (rtol 1e-5: float32 products against float64)."""
  config = hidden_config(tiny_bert, sentiment, wide_teacher)
  job = finetune.make_job(config, tmp_path)
  projection = job.extra_params["hidden_projection"]
  assert projection["kernel"].shape == (32, 48) and projection["bias"].shape == (48,)
  np.testing.assert_allclose(np.std(np.asarray(projection["kernel"])), 0.02, rtol=0.1)
  trained = job.initial_params()
  assert set(trained) == {"model", "hidden_projection"} and job.model_params(trained) is job.params
  batch = {k: v for k, v in next(job.iterator).items() if k != "lengths"}
  rng = jax.random.PRNGKey(0)
  sums = jax.jit(job.loss_sums)(trained, job.frozen_params, batch, rng)
  assert set(sums) == {"task", "hidden"}

  kw = dict(attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"], output_hidden_states=True)
  student = job.model.apply({"params": job.params}, batch["input_ids"], deterministic=False, rngs={"dropout": rng}, **kw)
  teacher = job.frozen_model.apply({"params": job.frozen_params}, batch["input_ids"], **kw)
  h_s, h_t = (np.asarray(x, np.float64) for x in (student.hidden_states[1], teacher.hidden_states[2]))
  kernel, bias = (np.asarray(projection[k], np.float64) for k in ("kernel", "bias"))
  mask = np.asarray(batch["attention_mask"], np.float64)
  expected = np.sum(mask[..., None] * (h_s @ kernel + bias - h_t) ** 2)
  np.testing.assert_allclose(float(sums["hidden"]), expected, rtol=1e-5)
  assert float(job.denominators(batch)["hidden"]) == mask.sum() * 48  # the teacher's width

  grads = jax.jit(jax.grad(lambda p: job.loss_sums(p, job.frozen_params, batch, rng)["hidden"]))(trained)
  assert np.abs(np.asarray(grads["hidden_projection"]["kernel"])).max() > 1e-6
  assert np.abs(np.asarray(grads["hidden_projection"]["bias"])).max() > 1e-6
  assert np.abs(np.asarray(grads["model"]["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"])).max() > 1e-6


@pytest.mark.slow
def test_a_run_learns_w_h_and_exports_the_student_without_it(tiny_bert, sentiment, wide_teacher, tmp_path):
  from distilbert_jax import convert
  config = hidden_config(tiny_bert, sentiment, wide_teacher, **{"optim.learning_rate": 1e-2})
  config.export = True
  jobs.train_and_evaluate(config, str(tmp_path))
  values = [m["loss_hidden"] for m in read_metrics(tmp_path) if "loss_hidden" in m]
  assert len(values) == config.train.num_steps and np.mean(values[-3:]) < 0.8 * values[0], values
  model, params = convert.load_pretrained(str(tmp_path / "export"), head="sequence_classification")
  assert model.config.hidden_size == 32 and "hidden_projection" not in params
  assert set(params) == {"bert", "classifier"}


def test_only_a_job_that_learns_w_h_takes_unequal_widths_for_the_hidden_loss():
  """General distillation (distill.build_loss) calls checked_layer_pairs without a projection."""
  from types import SimpleNamespace
  from configs import glue as glue_config
  loss = glue_config.get_config().loss
  loss.alpha_hidden = 1.0
  model = lambda width: SimpleNamespace(hidden_size=width, num_hidden_layers=2, num_attention_heads=4)
  with pytest.raises(errors.ConfigError, match="needs equal hidden sizes, but the student's is 32 and the teacher's 48"):
    checks.checked_layer_pairs(loss, model(32), model(48), ((1, 2),))
  assert checks.checked_layer_pairs(loss, model(32), model(48), ((1, 2),), hidden_projection=True)[2] == 4


def test_unequal_head_counts_are_a_config_error_for_the_attention_loss_only(tiny_bert, sentiment, tmp_path):
  import transformers
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64, num_labels=2)
  transformers.BertForSequenceClassification(config).save_pretrained(tmp_path)
  with pytest.raises(errors.ConfigError, match="needs equal head counts, but the student has 4 and the teacher 2"):
    built_loss(layer_config(tiny_bert, sentiment, str(tmp_path)))
  loss = built_loss(layer_config(tiny_bert, sentiment, str(tmp_path), **{"loss.alpha_attention": 0.0}))[0]
  assert loss.relation_heads == 2


@pytest.mark.slow
def test_distillation_logs_the_relation_loss_and_lowers_it(tiny_config, tmp_path):
  """configs/tiny.py (random 4-layer teacher, student of its layers 0 and 3) with MiniLMv2's
  relations of the last layers, 2 relation heads, as the only loss; the student is initialised
  at random, so it starts far from the teacher (weights at 10x the usual scale)."""
  from configs import tiny
  teacher = dict(tiny.get_config().teacher.random_config, initializer_range=0.2)
  config = tiny_config(**{"teacher.random_config": teacher, "student.init": "random"}, **{"loss.alpha_ce": 0.0, "loss.alpha_mlm": 0.0, "loss.alpha_cos": 0.0,
                          "loss.alpha_hidden": 0.0, "loss.alpha_relation": 1.0, "loss.relation_heads": 2,
                          "optim.learning_rate": 1e-2, "train.num_steps": 8, "train.checkpoint_every": 100})
  jobs.train_and_evaluate(config, str(tmp_path))
  values = [m["loss_relation"] for m in read_metrics(tmp_path) if "loss_relation" in m]
  assert len(values) == 8 and all(np.isfinite(values)) and values[0] > 0, values
  assert np.mean(values[-3:]) < 0.8 * values[0], values


def test_distillation_relation_layers_outside_the_stacks_are_a_config_error(tiny_config):
  config = tiny_config(**{"loss.alpha_relation": 1.0, "loss.relation_layers": ((2, 3),)})
  pair = distill.build_models(config)
  with pytest.raises(errors.ConfigError, match=r"the pair \(2, 3\) is outside the student's 0..1"):
    distill.build_loss(config, pair, jnp.ones(30522) / 30522, 103)


def minilm_config(tiny_bert, sentiment, teacher, **overrides):
  """MiniLM's two losses alone, at the last layer of each model (relation_layers empty)."""
  return layer_config(tiny_bert, sentiment, teacher, **{"loss.alpha_attention": 0.0, "loss.alpha_relation": 0.0,
                                                        "loss.alpha_attention_kl": 1.0,
                                                        "loss.alpha_value_relation": 1.0, **overrides})


def test_minilm_attention_and_value_relation_sums_are_those_of_the_models_outputs(tiny_bert, sentiment,
                                                                                   wide_teacher):
  config = minilm_config(tiny_bert, sentiment, wide_teacher)
  finetune.check_config(config)
  loss, params, teacher_params, batch = built_loss(config)
  assert loss.relation_pairs == ((0, 1),)
  sums = jax.jit(loss.loss_sums)(params, teacher_params, batch, jax.random.PRNGKey(0))
  assert set(sums) == {"task", "attention_kl", "value_relation"}
  mask = batch["attention_mask"]
  student, teacher = models_qkv(loss, params, teacher_params, batch)
  expected = attention_losses.attention_distribution_loss(*student[0][:2], *teacher[1][:2], mask)
  np.testing.assert_allclose(float(sums["attention_kl"]), float(expected[0]), rtol=1e-6)
  value = attention_losses.value_relation_loss(student[0][2], teacher[1][2], mask)
  np.testing.assert_allclose(float(sums["value_relation"]), float(value[0]), rtol=1e-6)
  denominators = loss.denominators(batch)
  for name, (_, denominator) in (("attention_kl", expected), ("value_relation", value)):
    np.testing.assert_allclose(float(denominators[name]), float(denominator), rtol=0)
    assert float(sums[name]) > 0, name
  # Each reaches the student's attention: queries and keys, or values.
  for name, used in (("attention_kl", ("query", "key")), ("value_relation", ("value",))):
    grads = jax.jit(jax.grad(lambda p: loss.loss_sums(p, teacher_params, batch, jax.random.PRNGKey(0))[name]))(params)
    attention = grads["bert"]["encoder"]["layer"]["0"]["attention"]["self"]
    for projection in ("query", "key", "value"):
      reached = np.abs(np.asarray(attention[projection]["kernel"])).max() > 1e-6
      assert reached == (projection in used), (name, projection)


@pytest.mark.parametrize("overrides,fragment", [
    ({"loss.alpha_attention_kl": -1.0}, "loss.alpha_attention_kl=-1.0 must be >= 0"),
    ({"loss.alpha_value_relation": -0.5}, "loss.alpha_value_relation=-0.5 must be >= 0"),
])
def test_bad_minilm_weights_are_config_errors_before_any_model(tiny_bert, sentiment, wide_teacher, overrides,
                                                               fragment):
  with pytest.raises(errors.ConfigError, match=fragment):
    finetune.check_config(minilm_config(tiny_bert, sentiment, wide_teacher, **overrides))


def test_minilm_losses_need_equal_head_counts_and_layers_inside_the_stacks(tiny_bert, sentiment, wide_teacher,
                                                                          tmp_path):
  import transformers
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64, num_labels=2)
  transformers.BertForSequenceClassification(config).save_pretrained(tmp_path)
  with pytest.raises(errors.ConfigError, match=r"loss.alpha_attention_kl and loss.alpha_value_relation need equal "
                                               r"head counts, but the student has 4 and the teacher 2"):
    built_loss(minilm_config(tiny_bert, sentiment, str(tmp_path)))
  with pytest.raises(errors.ConfigError, match=r"loss.relation_layers: the pair \(0, 5\) is outside"):
    built_loss(minilm_config(tiny_bert, sentiment, wide_teacher, **{"loss.alpha_value_relation": 0.0,
                                                                    "loss.relation_layers": ((0, 5),)}))


def test_distillation_sums_minilm_losses_of_the_last_layers(tiny_config):
  config = tiny_config(**{"loss.alpha_attention_kl": 1.0, "loss.alpha_value_relation": 1.0})
  pair = distill.build_models(config)
  loss = distill.build_loss(config, pair, jnp.ones(30522) / 30522, 103)
  assert loss.relation_pairs == ((1, 3),)  # the last layer of each
  rng = np.random.default_rng(0)
  batch = {"input_ids": jnp.asarray(rng.integers(1000, 2000, (2, 12)), jnp.int32),
           "attention_mask": jnp.asarray([[1] * 12, [1] * 7 + [0] * 5], jnp.int32)}
  micro = loss.prepare(batch, jax.random.PRNGKey(0))
  sums = jax.jit(loss.loss_sums)(pair.student_params, pair.teacher_params, micro, jax.random.PRNGKey(1))
  kw = dict(attention_mask=micro["attention_mask"], output_qkv=True)
  student = jax.jit(lambda p, ids: loss.student.apply({"params": p}, ids, deterministic=False,
                                                      rngs={"dropout": jax.random.PRNGKey(1)}, **kw))(
      pair.student_params, micro["input_ids"]).attention_qkv
  teacher = jax.jit(lambda p, ids: loss.teacher.apply({"params": p}, ids, deterministic=True, **kw))(
      pair.teacher_params, micro["input_ids"]).attention_qkv
  mask = micro["attention_mask"]
  expected = attention_losses.attention_distribution_loss(*student[1][:2], *teacher[3][:2], mask)
  np.testing.assert_allclose(float(sums["attention_kl"]), float(expected[0]), rtol=1e-6)
  value = attention_losses.value_relation_loss(student[1][2], teacher[3][2], mask)
  np.testing.assert_allclose(float(sums["value_relation"]), float(value[0]), rtol=1e-6)
  np.testing.assert_allclose(float(loss.denominators(micro)["attention_kl"]), float(expected[1]), rtol=0)
