# Two entry points for a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR ?= $(CURDIR)/.cache/ultralytics
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib

.PHONY: install demo test test-slow lint docs coverage bench accuracy

$(BIN)/yoloprune: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/yoloprune

demo: install
	$(BIN)/python -m yoloprune.cli.demo

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Rewrite the generated parts of docs/ (the `--help` blocks of docs/cli.md), then check them all.
docs: install
	YOLOPRUNE_UPDATE_DOCS=1 $(BIN)/python -m pytest -q tests/test_docs.py -k cli_reference
	$(BIN)/python -m pytest -q tests/test_docs.py

coverage: install
	PYTHONPATH=src $(BIN)/python benchmarks/coverage.py

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	PYTHONPATH=src $(BIN)/python benchmarks/trace_speed.py
	PYTHONPATH=src $(BIN)/python benchmarks/latency.py

# The accuracy benchmark trains models: about 10 minutes with ARGS=--quick, about an hour without.
accuracy: install
	$(BIN)/pip install -q -e ".[bench]"
	PYTHONPATH=src $(BIN)/python benchmarks/accuracy.py $(ARGS)
