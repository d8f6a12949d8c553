"""What every section of scripts/benchmark.py shares: side-by-side timing, the machine's
description and load, resident-memory probes, tcmalloc, inputs, same-weight model pairs, and
the distillation config the training figures use.

Heavy frameworks (jax, torch, transformers) are imported inside the functions, so that a
memory probe imports only the framework it measures.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # configs/ is not a package that the install puts on sys.path
ENTRY = Path(__file__).resolve().parent / "benchmark.py"  # what child processes run

# bert-base-uncased's special ids ([PAD], [UNK], [CLS], [SEP], [MASK]): the masking never picks them.
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
SPECIAL_IDS = (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID)
ARCHS = ("distilbert", "bert")
SHAPES = ((1, 128), (8, 128), (32, 128), (8, 512))


# ===================================================================================== timing
def time_side_by_side(contenders: dict[str, Callable[[], object]], reps: int, warmup: int = 1
                      ) -> dict[str, list[float]]:
  """Seconds of each run of each contender. Every contender runs `warmup` times first; then in
  repetition r they run in the given order when r is even and in reverse when it is odd, so
  that a slow spell of the machine hits every contender alike."""
  names = list(contenders)
  for _ in range(warmup):
    for name in names:
      contenders[name]()
  times = {name: [] for name in names}
  for r in range(reps):
    for name in (names if r % 2 == 0 else names[::-1]):
      start = time.perf_counter()
      contenders[name]()
      times[name].append(time.perf_counter() - start)
  return times


def median(xs) -> float:
  return float(np.median(xs))


# ===================================================================================== memory
def memory_status() -> dict[str, int]:
  """VmRSS and VmHWM (peak resident set) of this process, in bytes."""
  out = {}
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(("VmRSS:", "VmHWM:")):
        out[line.split(":")[0]] = int(line.split()[1]) * 1024
  return out


def reset_peak_rss() -> None:
  """Sets VmHWM back to the current RSS (Linux >= 4.0, `echo 5 > /proc/PID/clear_refs`)."""
  with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
    f.write("5")


def run_child(args: list[str], marker: str, env: Optional[dict] = None) -> dict:
  """Runs scripts/benchmark.py with `args` in a fresh process and returns the JSON it printed
  after `marker`, or {"error": the end of its stderr} when it failed."""
  result = subprocess.run([sys.executable, str(ENTRY)] + args, capture_output=True, text=True, env=env,
                          check=False, cwd=ROOT)
  lines = [line for line in result.stdout.splitlines() if line.startswith(marker + " ")]
  if result.returncode or not lines:
    return {"error": result.stderr[-2000:] or "no output"}
  return json.loads(lines[-1][len(marker) + 1:])


# ===================================================================================== machine
def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def cpu_threads() -> int:
  """The threads XLA's CPU client uses: the cores this process may run on."""
  return len(os.sched_getaffinity(0))


def cpu_jiffies() -> dict:
  """Machine-wide CPU time from /proc/stat: busy, idle and steal (time the hypervisor gave to
  other guests), in jiffies; empty where there is no /proc/stat."""
  try:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
  except OSError:
    return {}
  user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
  return dict(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal)


def steal_percent(env: dict) -> Optional[float]:
  start, end = env.get("cpu_jiffies_start"), env.get("cpu_jiffies_end")
  if not start or not end:
    return None
  total = sum(end[k] - start[k] for k in ("busy", "idle", "steal"))
  return 100.0 * (end["steal"] - start["steal"]) / max(total, 1)


def environment() -> dict:
  import jax
  import jaxlib
  import torch
  import transformers
  return dict(cpu=cpu_name(), cores=cpu_threads(), jax=jax.__version__, jaxlib=jaxlib.__version__,
              torch=torch.__version__, transformers=transformers.__version__, backend=jax.default_backend(),
              device_kind=jax.devices()[0].device_kind,
              xla_flags=os.environ.get("XLA_FLAGS", ""), torch_threads=torch.get_num_threads(),
              torch_attention=hf_config("bert")._attn_implementation or "sdpa",  # pylint: disable=protected-access
              python=platform.python_version(), load_average_start=os.getloadavg(),
              malloc=os.environ.get("LD_PRELOAD") or "system (glibc)", cpu_jiffies_start=cpu_jiffies())


TCMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
                  "/usr/lib64/libtcmalloc_minimal.so.4", "/usr/local/lib/libtcmalloc_minimal.so.4")


def reexec_with_tcmalloc() -> None:
  """Starts this script again with tcmalloc preloaded (both frameworks then allocate through it).
  glibc returns every buffer over 32 MiB to the kernel on free, so each step of either framework
  page-faults its large temporaries back in: 475k faults (1.9 GB) per distillation step here."""
  if "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
    return
  lib = next((p for p in TCMALLOC_PATHS if os.path.exists(p)), None)
  if lib is None:
    sys.exit("benchmark.py: --malloc tcmalloc: libtcmalloc_minimal.so.4 not found in "
             f"{', '.join(TCMALLOC_PATHS)} (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")
  os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "LD_PRELOAD": lib})


# ===================================================================================== inputs, models
def make_input_ids(batch: int, length: int, seed: int = 0) -> np.ndarray:
  """[batch, length] int32: [CLS] random word-piece ids [SEP], no padding."""
  ids = np.random.default_rng(seed).integers(1000, 30522, (batch, length), dtype=np.int32)
  ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
  return ids


def hf_config(arch: str):
  import transformers
  return transformers.BertConfig() if arch == "bert" else transformers.DistilBertConfig()


def torch_model(arch: str, head: str, seed: int = 0):
  """A randomly initialised transformers model in eval mode (default Hugging Face config)."""
  import torch
  import transformers
  classes = {("bert", "base"): transformers.BertModel, ("bert", "masked_lm"): transformers.BertForMaskedLM,
             ("distilbert", "base"): transformers.DistilBertModel,
             ("distilbert", "masked_lm"): transformers.DistilBertForMaskedLM}
  torch.manual_seed(seed)
  return classes[arch, head](hf_config(arch)).eval()


def torch_state_dict(model) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def our_config(arch: str, **compile_fields):
  """Our config for transformers' default config of `arch`, with compile fields changed."""
  from distilbert_jax import models
  return dataclasses.replace(models.config_from_hf_dict(hf_config(arch).to_dict()), **compile_fields)


def our_params_from_torch(model, config, head: str):
  """The torch model's weights as our parameters (on the default device)."""
  import jax
  from distilbert_jax import convert
  return jax.device_put(convert.state_dict_to_params(torch_state_dict(model), config, head))


def count_params(params) -> int:
  import jax
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


# ===================================================================================== distillation config
def unrolled_xla() -> dict:
  """Unrolled layers and XLA's own attention for student and teacher: on CPU a little faster than
  the configs' scan + jax.nn.dot_product_attention (BENCHMARKS.md, lever log)."""
  return {"teacher.scan_layers": False, "student.scan_layers": False,
          "teacher.attention_impl": "xla", "student.attention_impl": "xla"}


def distillation_config(batch: int, length: int, **overrides):
  """configs/distilbert_base.py for one process: float32, `batch` sequences of `length`, no
  accumulation; a BERT-base teacher with transformers' default config (random weights unless
  the caller supplies them). `overrides`: {"section.field": value}."""
  import jax
  from configs import distilbert_base
  config = distilbert_base.get_config()
  config.teacher.random_config = dict(model_type="bert")  # transformers' BertConfig() defaults
  config.teacher.dtype = "float32"
  config.student.dtype = "float32"
  config.train.batch_size = batch
  config.train.grad_accum_steps = 1
  config.data.max_length = length
  if jax.default_backend() == "cpu":
    overrides = {**unrolled_xla(), **overrides}
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def gathered_overrides() -> dict:
  """The library's less-work setting: KL over masked tokens, and the vocabulary projection of
  student and teacher only at the masked positions."""
  return {"loss.ce_masked_only": True, "loss.logits_at_masked_only": True}
