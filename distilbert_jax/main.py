"""The `distilbert-jax` command line: arguments only; the work lives in the library.

  distilbert-jax distill --config configs/tiny.py --workdir runs/tiny [--config.train.batch_size=64]
  distilbert-jax finetune --config configs/glue.py --config.task=rte --config.model.path=DIR \
      --config.data.dir=GLUE_DIR --workdir runs/rte
  distilbert-jax evaluate --model runs/rte/export --task glue/rte --data GLUE_DIR
  distilbert-jax convert --to flax HF_DIR OUT_DIR        (or --to pytorch FLAX_DIR OUT_DIR)
  distilbert-jax token-counts --config CONFIG --out counts.npy
  distilbert-jax evaluate-sts --model DIR --data FILE.tsv [--teacher DIR]
  distilbert-jax compile --config CONFIG --target v5e-256 [--out report.json] [--fit-batch]

Problems a user can fix (errors.Error) print one line and exit with status 2; a run stopped by
SIGTERM or SIGINT saves a checkpoint and exits with 128 + the signal number.
"""
import argparse
import glob
import json
import os
import sys
from pathlib import Path

from absl import flags as absl_flags
from absl import logging

from distilbert_jax import configuration, errors, storage
from distilbert_jax.tasks import defaults

OVERRIDES_HELP = ("Any field of the config may follow as --config.SECTION.FIELD=VALUE "
                  "(e.g. --config.train.num_steps=100).")


def _add_config_args(parser, workdir_help: str):
  parser.add_argument("--config", required=True, metavar="FILE[:ARG]",
                      help="The configuration file (configs/*.py), optionally with the argument of its get_config.")
  parser.add_argument("--workdir", required=True, help=workdir_help)


def _add_rows_args(parser, *, model: str, out: str, batch_size: int, batch: str, max_length: str,
                   text_columns: str):
  """The flags of the commands that read rows of text (predict, embed); the help texts differ."""
  parser.add_argument("--model", required=True, help=model + " Or a Hugging Face Hub repo id.")
  parser.add_argument("--input", required=True, help="FILE.tsv|.csv|.jsonl|.json|.txt, or - (text lines on stdin).")
  parser.add_argument("--out", help=out)
  parser.add_argument("--batch-size", type=int, default=batch_size, help=batch)
  parser.add_argument("--max-length", type=int, help=max_length)
  parser.add_argument("--text-columns", help=text_columns)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="distilbert-jax", description="Distil, pretrain, fine-tune, evaluate and convert BERT-family "
      "encoders in JAX.", epilog="`distilbert-jax COMMAND --help` describes each command.")
  parser.add_argument("-v", "--verbose", action="store_true", help="Log at INFO level (JAX, orbax and ours).")
  commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

  p = commands.add_parser("distill", help="Distil a student from a teacher (or pretrain it with MLM alone).",
                          description="Runs or resumes the distillation a config describes; writes checkpoints, "
                          "metrics.jsonl, TensorBoard logs and WORKDIR/export (Hugging Face format).",
                          epilog=OVERRIDES_HELP)
  _add_config_args(p, "Directory for checkpoints, metrics and the export; rerunning resumes from it.")

  p = commands.add_parser("finetune", help="Fine-tune (or task-distil) on GLUE, SQuAD or your own labelled data.",
                          description="Runs or resumes the fine-tuning a config describes (configs/glue.py, "
                          "configs/squad.py); evaluates, keeps the best model, writes WORKDIR/export with "
                          "eval_results.json and the predictions.", epilog=OVERRIDES_HELP)
  _add_config_args(p, "Directory for checkpoints, metrics, predictions and the export; rerunning resumes.")

  p = commands.add_parser("evaluate", help="Evaluate a fine-tuned model on a GLUE task, SQuAD or a labelled table.",
                          description="Prints the task's official metrics and writes them (and the predictions) "
                          "to --out when given.")
  p.add_argument("--model", required=True, help="A Hugging Face or distilbert_jax model directory with a task head.")
  p.add_argument("--task", required=True, help="glue/TASK (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), "
                 "squad, squad_v2 or custom.")
  p.add_argument("--data", required=True, help="GLUE_DIR, tfds, a SQuAD JSON file or (custom) a .tsv/.csv/.jsonl.")
  p.add_argument("--split", help="Only this split (e.g. dev_matched).")
  p.add_argument("--max-length", type=int, help=f"Tokens per example (default {defaults.MAX_LENGTH}, SQuAD "
                 f"{defaults.SQUAD_MAX_LENGTH}; at most the model's positions).")
  p.add_argument("--batch-size", type=int, default=defaults.EVAL_BATCH_SIZE, help="Examples per evaluation batch.")
  p.add_argument("--text-columns", default=",".join(defaults.TEXT_COLUMNS),
                 help="custom: comma-separated text column(s).")
  p.add_argument("--label-column", default=defaults.LABEL_COLUMN, help="custom: the label column.")
  p.add_argument("--regression", action="store_true", help="custom: the labels are numbers.")
  p.add_argument("--out", help="Directory for eval_results.json and the predictions.")

  p = commands.add_parser("predict", help="Labels, scores or answer spans of a fine-tuned model for each input row.",
                          description="Reads .tsv, .csv, .jsonl or .txt (or - for stdin) and writes one JSON line "
                          "per row, in input order; a bad row is reported and written as an error record.")
  _add_rows_args(p, model="A fine-tuned classification or question answering model directory.",
                 out="The JSON lines file to write (default: stdout).", batch_size=32, batch="Rows per batch.",
                 max_length=f"Tokens per row (default {defaults.MAX_LENGTH}, question answering "
                 f"{defaults.SQUAD_MAX_LENGTH}; at most the model's positions).",
                 text_columns="A table's comma-separated text column(s) (default: found by name).")

  p = commands.add_parser("embed", help="Sentence embeddings of each input row.",
                          description="Reads the inputs predict reads (one text per row) and writes the "
                          "embeddings as .npy (float32 [rows, hidden]) or JSON lines, in input order.")
  _add_rows_args(p, model="A Hugging Face or Flax model directory.",
                 out="FILE.npy or FILE.jsonl (default: JSON lines on stdout).", batch_size=64,
                 batch="Sentences per batch.", max_length="Tokens per sentence, longer ones cut (default: the "
                 "model's sentence-transformers max_seq_length, else 128).",
                 text_columns="A table's text column (default: text or sentence).")

  p = commands.add_parser("convert", help="Convert weights between Hugging Face (PyTorch) and Flax directories.",
                          description="Converts a model directory; the output is written atomically.")
  p.add_argument("--to", required=True, choices=["flax", "pytorch"], help="The format to write.")
  p.add_argument("--head", help="The model head (default: from config.json's architectures).")
  p.add_argument("--overwrite", action="store_true", help="Replace a non-empty output directory.")
  p.add_argument("src", help="The directory to read.")
  p.add_argument("dst", help="The directory to write.")

  p = commands.add_parser("export", help="Export a model for serving: StableHLO (jax.export) or ONNX.",
                          description="Writes OUT atomically: model.stablehlo or model.onnx (the head's forward, "
                          "parameters baked in, symbolic batch and length), metadata.json and the tokenizer files.")
  p.add_argument("--format", required=True, metavar="{stablehlo,onnx}", help="The artifact to write.")
  p.add_argument("--head", help="The model head (default: from config.json's architectures).")
  p.add_argument("--platforms", default="cpu,cuda,tpu", help="stablehlo: the platforms to lower for, comma-separated.")
  p.add_argument("--overwrite", action="store_true", help="Replace a non-empty output directory.")
  p.add_argument("model_dir", metavar="MODEL_DIR", help="A Hugging Face or distilbert_jax model directory.")
  p.add_argument("out", metavar="OUT", help="The directory to write.")

  p = commands.add_parser("token-counts", help="Count token ids of a config's corpus (for MLM smoothing).",
                          description="Tokenises the config's data exactly as `distill` does and writes the "
                          "count of every token id as .npy (the input of config.mask.token_counts).",
                          epilog=OVERRIDES_HELP)
  _add_config_args(p, "Directory for the token cache (unless config.data.cache_dir names one).")
  p.add_argument("--out", required=True, help="The .npy file to write.")

  p = commands.add_parser("evaluate-sts", help="Spearman correlation of sentence embeddings on STS-B.",
                          description="Mean-pooled sentence embeddings, cosine similarity against gold scores.")
  p.add_argument("--model", required=True, help="A Hugging Face or Flax model directory.")
  p.add_argument("--data", required=True, help="A GLUE STS-B style .tsv (sentence1, sentence2, score).")
  p.add_argument("--teacher", help="A second model to compare with.")

  p = commands.add_parser("compile", help="Compile a distill or finetune config for a TPU slice or GPU machine, "
                          "from any machine.", description="Builds the job's state from shapes alone (model "
                          "directories are read for config.json only), compiles the train step for the target "
                          "and prints memory per device, collectives and a roofline step time. Exits with 2 "
                          "when the step does not fit.", epilog=OVERRIDES_HELP)
  p.add_argument("--config", required=True, metavar="FILE[:ARG]", help="The configuration file (configs/*.py).")
  p.add_argument("--target", required=True, help="The hardware: " + "; ".join(
      ("Cloud TPU v4-8 ... v4-4096, v5p-8 ..., v5e-1 ... v5e-256, v6e-1 ... v6e-256", "several slices: v5e-256x2",
       "GPU nodes: h100x8, h200x8, a100x8, h100x8x4 (4 nodes)")) + ".")
  p.add_argument("--out", help="Write the report as JSON here.")
  p.add_argument("--fit-batch", action="store_true", help="Find the largest per-device micro-batch that fits "
                 "(and the train.grad_accum_steps that keeps the config's global batch).")
  return parser


def _has_accelerator() -> bool:
  """Whether this machine has a TPU (a Google PCI device), an NVIDIA or an AMD GPU."""
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() == "0x1ae0":
          return True
    except OSError:
      continue
  return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"))


def _choose_platforms(command: str) -> None:
  """JAX_PLATFORMS before jax is imported: `compile` runs on this machine's CPU whatever it
  compiles for; elsewhere, on a machine without an accelerator, "cpu", so that an installed TPU
  or CUDA plugin (the tpu and cuda extras) is not initialised, and warns, on every command."""
  if "JAX_PLATFORMS" not in os.environ and (command == "compile" or not _has_accelerator()):
    os.environ["JAX_PLATFORMS"] = "cpu"


def _config(args, overrides):
  config = configuration.load(args.config)
  configuration.apply_overrides(config, overrides)
  return configuration.resolve_paths(config)


def _workdir(path: str):
  """--workdir made absolute and checked; the run creates it once its data has been read. A
  gs:// work directory is checked by writing (and deleting) a probe object there, so that an
  unreachable bucket, missing credentials or a permission error stop the run before any model
  is loaded."""
  if storage.is_remote(path):
    storage.check_writable(path)
    return storage.path(path)
  workdir = Path(path).expanduser().absolute()
  if workdir.exists() and not workdir.is_dir():
    raise errors.ConfigError(f"{path}: --workdir exists and is not a directory")
  existing = next(p for p in (workdir, *workdir.parents) if p.exists())
  if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
    raise errors.ConfigError(f"{path}: cannot create the work directory ({existing} is not a writable directory)")
  return workdir


# The arguments that name a file or directory the command reads, and those it writes.
_INPUT_ARGS = ("model", "input", "data", "teacher", "src", "model_dir")
_OUTPUT_ARGS = ("out", "dst")


def _remote_paths(args) -> None:
  """Before any work: each gs:// input argument replaced by its local copy (storage.local_copy;
  an incomplete, unreadable or missing one is a one-line error here), and each gs:// output
  checked for writing. Outputs stay URIs: the atomic writes publish them there."""
  for name in _INPUT_ARGS:
    value = getattr(args, name, None)
    if isinstance(value, str) and storage.is_remote(value):
      setattr(args, name, storage.local_copy(value))
  for name in _OUTPUT_ARGS:
    value = getattr(args, name, None)
    if isinstance(value, str) and storage.is_remote(value):
      storage.check_writable(value)


def _print_metrics(result: dict) -> None:
  """The final evaluation's metrics (of the exported model when there is one), one line each."""
  prefix = "final_eval_" if any(k.startswith("final_eval_") for k in result) else "eval_"
  for name, value in result.items():
    if name.startswith(prefix):
      print(f"{name[len(prefix):]}: {value:.4f}" if isinstance(value, float) else f"{name[len(prefix):]}: {value}")


def main(argv) -> int:
  parser = build_parser()
  overrides, rest = configuration.split_overrides(argv)
  args, unknown = parser.parse_known_args(rest)
  if unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  if overrides and args.command not in ("distill", "finetune", "token-counts", "compile"):
    parser.error(f"{args.command} takes no --config.* overrides")
  logging.set_verbosity(logging.INFO if args.verbose else logging.WARNING)
  _choose_platforms(args.command)
  _remote_paths(args)

  if args.command == "distill":
    from distilbert_jax import jobs
    from distilbert_jax.data import corpus
    from distilbert_jax.jobs import distill
    from distilbert_jax.tasks import embeddings
    workdir = _workdir(args.workdir)  # first: a bucket that cannot be used stops the run before any download
    config = _config(args, overrides)
    result = jobs.train_and_evaluate(config, str(workdir))
    if config.get("eval_heldout") and "export_dir" in result:  # the teacher/student report (PyTorch)
      heldout = config.eval_heldout
      if heldout == "embedded":
        heldout = corpus.write_embedded_corpus(distill.embedded_corpus_dir(workdir))["heldout"]
      embeddings.distill_report(str(workdir), result["export_dir"], config.teacher.path, heldout)
  elif args.command == "finetune":
    from distilbert_jax import jobs
    workdir = _workdir(args.workdir)
    config = _config(args, overrides)
    if config.get("job") != "finetune":
      raise errors.ConfigError(f"{args.config}: not a fine-tuning config (config.job={config.get('job')!r})")
    _print_metrics(jobs.train_and_evaluate(config, str(workdir)))
  elif args.command == "evaluate":
    from distilbert_jax.tasks import evaluate_command
    evaluate_command.evaluate_main(args.model, args.task, args.data, split=args.split, max_length=args.max_length,
                                   batch_size=args.batch_size, out_dir=args.out,
                                   text_columns=args.text_columns.split(","), label_column=args.label_column,
                                   regression=args.regression)
  elif args.command == "predict":
    from distilbert_jax.serving import predict
    predict.predict_main(args.model, args.input, args.out, batch_size=args.batch_size, max_length=args.max_length,
                         text_columns=args.text_columns.split(",") if args.text_columns else None)
  elif args.command == "embed":
    from distilbert_jax.serving import embed
    embed.embed_main(args.model, args.input, args.out, batch_size=args.batch_size, max_length=args.max_length,
                     text_columns=args.text_columns.split(",") if args.text_columns else None)
  elif args.command == "convert":
    from distilbert_jax import convert
    convert.convert_main(args.to, args.src, args.dst, head=args.head, overwrite=args.overwrite)
  elif args.command == "export":
    from distilbert_jax.serving import export
    out = export.export_main(args.format, args.model_dir, args.out, head=args.head, overwrite=args.overwrite,
                             platforms=args.platforms.split(","))
    print(f"{args.format} export written to {out}")
  elif args.command == "token-counts":
    from distilbert_jax.jobs import distill
    from distilbert_jax.data import token_cache
    workdir = _workdir(args.workdir)
    config = _config(args, overrides)
    cache = distill.build_token_cache(config, workdir)
    token_cache.write_token_counts(cache, args.out)
    print(f"token counts of {cache.num_sequences} sequences written to {args.out}")
  elif args.command == "evaluate-sts":
    from distilbert_jax.tasks import embeddings
    embeddings.evaluate_sts_main(args.model, args.data, args.teacher)
  elif args.command == "compile":
    return _compile(args, _config(args, overrides))
  return 0


def _compile(args, config) -> int:
  from distilbert_jax.hardware import aot, targets
  from distilbert_jax import atomic
  target = targets.parse_target(args.target)
  try:
    if args.fit_batch:
      report, tried = aot.fit_batch(config, target)
      report["fit_batch_tried"] = [{"per_device_micro_batch": m, "fits": fits} for m, fits in tried]
    else:
      report = aot.compile_step(config, target)
  except aot.DoesNotFit as e:
    if args.out and e.report is not None:
      atomic.write_text(args.out, json.dumps(e.report, indent=2) + "\n")
    raise
  print(aot.format_report(report))
  if args.fit_batch:
    print(f"largest micro-batch that fits: {report['per_device_micro_batch']} per device, "
          f"--config.train.grad_accum_steps={report['grad_accum_steps']}")
  if args.out:
    atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")
  return 0


def run():
  """Console entry point."""
  # absl's logging expects absl's flags; we parse our own arguments.
  absl_flags.FLAGS.mark_as_parsed()
  try:
    sys.exit(main(sys.argv[1:]))
  except errors.Error as e:
    logging.flush()
    # A preempted run (train.Preempted) exits with 128 + the signal number, as shells report it.
    status = getattr(e, "exit_status", 2)
    print(f"distilbert-jax: {'error: ' if status == 2 else ''}{e}", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
  run()
