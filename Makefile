# Two entry points (see README): `make demo` runs the demo journey, `make test` runs every check.
# Both create the virtual environment in .venv on first use.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test bench docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,spark,cloud]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cxagent demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest

docs: $(STAMP)
	$(BIN)/python -m cxagent.data.docs docs/data-model.md

bench: $(STAMP)
	$(BIN)/python benchmarks/generate.py --orders 10100000 --days 30
