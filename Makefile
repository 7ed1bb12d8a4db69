# modelyard developer commands. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Start the server on http://127.0.0.1:8750 over ./modelyard-data (SQLite + artifact folder).
run: $(STAMP)
	$(VENV)/bin/modelyard server

## Lint (ruff), import-layer contracts (import-linter) and types (mypy).
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

## The whole suite: lint first, then every test (PostgreSQL tests are mandatory with CI=true).
test: $(STAMP) lint
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## Side-by-side benchmarks against MLflow (installs MLflow into bench/.venv-mlflow).
bench: $(STAMP)
	bash bench/run.sh $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
