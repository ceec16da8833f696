# Two commands for a new user (see README.md):
#   make replicate   # create .venv from the lock file, run the whole DAG (quick scale, CPU)
#   make test        # create the test environment and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
SNAKEMAKE_ARGS ?=

.PHONY: replicate test env test-env lint benchmarks

$(BIN)/.runtime-installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	# the project itself (shared/, replications/), importable from any folder
	$(BIN)/python -m pip install -q --no-deps -e . --config-settings editable_mode=compat
	touch $@

$(BIN)/.test-installed: $(BIN)/.runtime-installed requirements-tf.lock
	$(BIN)/python -m pip install -q -r requirements.lock -r requirements-tf.lock
	touch $@

env: $(BIN)/.runtime-installed

test-env: $(BIN)/.test-installed

# A killed run resumes with the same command: a stale lock is removed (only when no
# Snakemake works here) and jobs marked incomplete are rerun (outputs are atomic).
replicate: env
	$(BIN)/python -m shared.cli unlock-if-stale -- $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete $(SNAKEMAKE_ARGS)

lint: test-env
	$(BIN)/ruff check .
	$(BIN)/mypy

test: test-env lint
	$(BIN)/python -m pytest
