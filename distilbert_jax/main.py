"""The `distilbert-jax` command line: flags only; the work lives in the library.

  distilbert-jax distill --config configs/tiny.py --workdir runs/tiny [--config.train.batch_size=64]
  distilbert-jax convert --to flax HF_DIR OUT_DIR        (or --to pytorch FLAX_DIR OUT_DIR)
  distilbert-jax token-counts --config CONFIG --out counts.npy
  distilbert-jax evaluate-sts --model DIR --data FILE.tsv [--teacher DIR]
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

COMMANDS = ("distill", "convert", "token-counts", "evaluate-sts")

config_flags.DEFINE_config_file("config", None, "Training configuration file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the export.")
flags.DEFINE_enum("to", None, ["flax", "pytorch"], "convert: the target format.")
flags.DEFINE_string("head", None, "convert: the model head (default: from config.json).")
flags.DEFINE_string("out", None, "token-counts: the .npy file to write.")
flags.DEFINE_string("model", None, "evaluate-sts: a Hugging Face or Flax model directory.")
flags.DEFINE_string("teacher", None, "evaluate-sts: a second model to compare with.")
flags.DEFINE_string("data", None, "evaluate-sts: a GLUE STS-B style .tsv (sentence1, sentence2, score).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) < 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: distilbert-jax {{{','.join(COMMANDS)}}} [flags]")
  command, args = argv[1], argv[2:]
  if command == "distill":
    from distilbert_jax import train
    train.train_and_evaluate(_required(FLAGS.config, "--config"), _required(FLAGS.workdir, "--workdir"))
  elif command == "convert":
    from distilbert_jax import convert
    if len(args) != 2:
      raise app.UsageError("usage: distilbert-jax convert --to {flax,pytorch} SRC_DIR OUT_DIR")
    convert.convert_main(_required(FLAGS.to, "--to"), args[0], args[1], head=FLAGS.head)
  elif command == "token-counts":
    from distilbert_jax import input_pipeline
    c = _required(FLAGS.config, "--config")
    input_pipeline.token_counts_main(list(c.data.sources), c.data.tokenizer_dir or c.teacher.path,
                                     c.data.cache_dir or os.path.join(FLAGS.workdir or ".", "token_cache"),
                                     _required(FLAGS.out, "--out"), c.data.max_length, c.data.min_length)
  elif command == "evaluate-sts":
    from distilbert_jax import evaluate
    evaluate.evaluate_sts_main(_required(FLAGS.model, "--model"), _required(FLAGS.data, "--data"), FLAGS.teacher)


def _required(value, name):
  if value is None:
    raise app.UsageError(f"{name} is required")
  return value


def run():
  """Console entry point. Bad input (a ValueError naming the file) is one line and exit 1."""
  # Configs import their siblings (`from configs import distilbert_base`), as the Flax examples
  # do: make the directory that holds configs/ importable, wherever the command runs from.
  for i, arg in enumerate(sys.argv):
    path = arg[len("--config="):] if arg.startswith("--config=") else (
        sys.argv[i + 1] if arg == "--config" and i + 1 < len(sys.argv) else None)
    if path:  # "configs/x.py" or "configs/x.py:variant"
      sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path.split(":")[0]))))
  # Orbax and JAX log every checkpoint step at INFO; `--verbosity=0` brings them back.
  logging.set_verbosity(logging.WARNING)
  try:
    app.run(main)
  except (ValueError, OSError, RuntimeError) as e:
    if isinstance(e, app.UsageError):
      raise
    logging.flush()
    print(f"distilbert-jax: error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  run()
