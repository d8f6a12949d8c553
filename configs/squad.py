"""Fine-tune (and task-distil) a BERT-family encoder for extractive question answering (SQuAD).

  distilbert-jax finetune --config configs/squad.py --config.model.path=MODEL_DIR \
      --config.data.train=train-v1.1.json --config.data.eval=dev-v1.1.json --workdir runs/squad

SQuAD v2.0 files (questions with is_impossible or no answers) are recognised and scored as v2.0.
Task distillation (the paper's second step, EM 77.7 -> 79.1 for DistilBERT): add
--config.teacher.path=FINETUNED_TEACHER --config.loss.alpha_kd=1.0.
Defaults follow transformers' run_qa.py (3e-5, batch 12 -> 32 here, 2 epochs, length 384, stride
128). Measured figures (MiniLM teacher and 3-layer student on SQuAD articles) are in BENCHMARKS.md.
"""
from configs import glue
from distilbert_jax.tasks import defaults


def get_config():
  config = glue.get_config()
  config.task = "squad"
  config.data.max_length = defaults.SQUAD_MAX_LENGTH
  config.data.bucket_lengths = defaults.SQUAD_BUCKET_LENGTHS
  config.optim.learning_rate = 3e-5
  config.train.num_epochs = 2.0
  return config
