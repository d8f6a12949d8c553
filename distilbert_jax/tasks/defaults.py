"""The fine-tuning tasks' defaults, one place for both their users: the configs
(configs/glue.py, configs/squad.py read them) and the `distilbert-jax evaluate` command, which an
installed package runs without the repository's configs/ directory.

The values follow transformers' run_glue.py and run_qa.py.
"""

# Sequence classification: pairs longer than this are cut, the longer text first.
MAX_LENGTH = 128
# Batches are padded to the smallest of these that fits (one compilation each).
BUCKET_LENGTHS = (32, 64, 128)
EVAL_BATCH_SIZE = 64
# The user's own table: its text column(s) and label column.
TEXT_COLUMNS = ("text",)
LABEL_COLUMN = "label"

# SQuAD: windows of this many tokens over long contexts, overlapping by DOC_STRIDE tokens, with
# questions cut to MAX_QUERY_LENGTH.
SQUAD_MAX_LENGTH = 384
SQUAD_BUCKET_LENGTHS = (128, 256, 384)
DOC_STRIDE = 128
MAX_QUERY_LENGTH = 64
# Answer post-processing: the best start and end logits kept, the longest answer in tokens, and
# (v2.0) how much the best answer must beat "no answer" by.
N_BEST_SIZE = 20
MAX_ANSWER_LENGTH = 30
NULL_SCORE_DIFF_THRESHOLD = 0.0


def bucket_lengths(buckets: tuple, max_length: int) -> tuple:
  """`buckets` below max_length, then max_length: the buckets for a shorter or longer window."""
  return tuple(b for b in buckets if b < max_length) + (max_length,)
