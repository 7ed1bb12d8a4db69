# modelyard developer commands. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Two stamps: what running needs (the package and its dependencies), and the test extra
# (pytest, hypothesis, schemathesis, mypy, ruff, ...) on top. `make run` installs only the first.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint typecheck bench clean install install-test

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP) pyproject.toml
	$(PIP) install --quiet -e '.[test]'
	touch $(TEST_STAMP)

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

## Start the server on http://127.0.0.1:8750 over ./modelyard-data (SQLite + artifact folder).
run: $(RUN_STAMP)
	$(VENV)/bin/modelyard server

## Lint (ruff), import-layer contracts (import-linter) and types (mypy).
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

## Types alone (mypy; also part of lint).
typecheck: $(TEST_STAMP)
	$(VENV)/bin/mypy

## The whole suite: lint first, then every test (PostgreSQL tests are mandatory with CI=true).
test: $(TEST_STAMP) lint
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## Side-by-side benchmarks against MLflow (installs MLflow into bench/.venv-mlflow).
bench: $(TEST_STAMP)
	bash bench/run.sh $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
