# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: install install-test run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(PIP) install -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## Migrate the database and serve on http://127.0.0.1:5000 (SQLite under ./data by default).
run: install
	$(BIN)/trainflow server

## Install everything and run the whole test suite.
test: install-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

## Benchmarks (not part of `make test`): see bench/README.md.
bench: install-test
	$(BIN)/python bench/mlflow_writes.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
