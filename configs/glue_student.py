"""A 3-layer student of a fine-tuned teacher on a GLUE task: augmented task distillation.

The path that kept the most of the teacher in the retention table (BENCHMARKS.md), in three
steps, all-MiniLM-L6-v2 as the teacher (TASK: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli):

  1. The teacher, fine-tuned on the task (configs/glue.py picks 1e-4 for its width):
     distilbert-jax finetune --config configs/glue.py --config.task=TASK --config.model.path=TEACHER \
         --config.data.dir=GLUE_DIR --workdir runs/TASK-teacher
  2. A masked-LM for the augmentation. all-MiniLM-L6-v2 ships none; this trains a head on its
     first three layers from the GLUE training sentences (any model with its MLM head will do):
     python scripts/train_mlm_head.py --glue GLUE_DIR --out MLM_DIR --max-sentences 40000 \
         --epochs 3 --layers 3
  3. The student: the teacher's layers 0, 3 and 5 and its task head, trained for one epoch over
     the training set and 20 variants of each example (TinyBERT), plus 4,000 new pairs of the
     task's own texts on pair tasks (AugSBERT), on 0.5 x the labels' loss + 0.5 x T^2 KL to the
     teacher at T = 2 (the variants carry the KL alone); the final model is scored and exported:
     distilbert-jax finetune --config configs/glue_student.py:TASK --config.data.dir=GLUE_DIR \
         --config.model.path=runs/TASK-teacher/export --config.teacher.path=runs/TASK-teacher/export \
         --config.augment.mlm_path=MLM_DIR --workdir runs/TASK-student
     and `distilbert-jax evaluate --model runs/TASK-student/export --task TASK --data GLUE_DIR`
     scores it again on any data.

Expected (seed 0, 4,000 training examples, a 2-core AMD EPYC; the per-run files are in
results/retention/; GLUE scores x 100): CoLA 9.6 against the teacher's 21.6, MRPC 77.9 / 84.2,
RTE 51.6 / 54.9, SST-2 87.0 / 88.2, STS-B 77.4 / 82.7: 91.5% of the teacher's macro score
(plain fine-tuning of the same layers: 81.5%), 12 (CoLA) to 55 (MRPC) minutes a task. CoLA over
seeds 0, 1, 2: median 11.5 (9.6-11.8) against the teacher's 16.9 (15.0-21.6), 93.4% of the macro. The table
cut CoLA and SST-2 at 64 tokens (--config.data.max_length=64; this config keeps 128). General
distillation first (`distilbert-jax distill --config configs/minilm_l3.py`, on docstrings or on
the tasks' own texts) and then fine-tuning scored below these copied layers (docs/retention.md).
"""
from configs import glue
from distilbert_jax.tasks import glue as glue_tasks

# Which layers of the teacher the student keeps: the first and the last, and one between.
STUDENT_LAYERS = (0, 3, 5)


def get_config(task: str = "rte"):
  config = glue.get_config()
  config.task = task
  config.model.layers = STUDENT_LAYERS
  # The paper's logit loss (Sanh et al. 2019, eq. 1, with the labels' loss beside it).
  config.loss.alpha_task = 0.5
  config.loss.alpha_kd = 0.5
  config.loss.temperature = 2.0
  # TinyBERT's N = 20, K = 15, p = 0.4; four words masked in one MLM row (docs/finetuning.md).
  config.augment.num_variants = 20
  config.augment.top_k = 15
  config.augment.replace_prob = 0.4
  config.augment.words_per_row = 4
  config.augment.num_pairs = 4000 if glue_tasks.get_task(task).is_pair else 0
  config.augment.seed = 0
  # One epoch over originals and variants: 20 times the data of the teacher's three epochs.
  config.train.num_epochs = 1.0
  config.optim.learning_rate = 2e-4
  return config
