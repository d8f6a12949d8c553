"""`make distill`: halve a real pretrained BERT (all-MiniLM-L6-v2, 6 layers) into 3 layers.

The teacher ships no MLM head, so the student learns from hidden states alone: loss_cos on the
last hidden state and loss_hidden (MSE) between each student layer and the teacher layer it was
copied from. The corpus is the embedded standard-library corpus (distilbert_jax/corpus.py); the
held-out 5% is used only for the final report.

  distilbert-jax distill --config configs/minilm_l3.py --workdir runs/minilm_l3

Expected on a 2-core CPU: see README "Results" (filled from measured runs only).
"""
from configs import distilbert_base
from configs.tiny import minilm_dir


def get_config():
  config = distilbert_base.get_config()
  config.teacher.path = minilm_dir()
  config.teacher.head = "base"
  config.teacher.dtype = "float32"
  config.teacher.attention_impl = "xla"
  config.student.type = "bert"
  config.student.layers = (0, 3, 5)
  config.student.dtype = "float32"
  config.student.attention_impl = "xla"
  config.data.sources = ("embedded",)
  config.data.max_length = 64
  config.data.min_length = 6
  config.data.bucket_lengths = (16, 32, 64)
  # No corruption: the student learns to reproduce the teacher's view of real sentences.
  config.mask.mlm_probability = 0.0
  config.loss.alpha_ce = 0.0
  config.loss.alpha_mlm = 0.0
  config.loss.alpha_cos = 1.0
  config.loss.alpha_hidden = 1.0
  config.optim.learning_rate = 1e-4
  config.optim.warmup_fraction = 0.1
  config.train.batch_size = 32
  config.train.grad_accum_steps = 1
  config.train.num_steps = 300
  config.train.log_every = 20
  config.train.checkpoint_every = 100
  # The held-out sentences for the final report ("embedded": the embedded corpus's held-out file).
  config.eval_heldout = "embedded"
  return config
