# Two commands on a fresh machine: `make serve` and `make test`.
# Each creates .venv when missing and reinstalls only when pyproject.toml changes.

PYTHON_BIN ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.stamp-runtime
DEV_STAMP := $(VENV)/.stamp-dev
PYTEST_ARGS ?=

.PHONY: serve test lint types unit bench clean

$(PY):
	$(PYTHON_BIN) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Error: Python 3.11 or newer is required (found $(PYTHON_BIN))" >&2; exit 2; }
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,postgres,redis,kafka,vault]'
	touch $@ $(RUNTIME_STAMP)

serve: $(RUNTIME_STAMP)
	$(VENV)/bin/strongroom serve

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports

types: $(DEV_STAMP)
	$(VENV)/bin/mypy

# The whole suite on the embedded store, then again with every test's store on
# PostgreSQL (127.0.0.1:5432, or $$STRONGROOM_TEST_POSTGRES). Not repeated there:
# folders that never touch the store or already run on both (unit, kms, contract,
# postgres, scale, risk, streams, shared_ratelimit), and the end-to-end tests of
# what the server process and the CLI do whatever the store (signals, start-up
# configuration, client addresses, stream CLI formatting, a fresh checkout). The
# planted-card scan, kill -9 durability and backpressure do run on both.
PG_PASS_SKIPS := --ignore=tests/unit --ignore=tests/kms --ignore=tests/contract \
	--ignore=tests/postgres --ignore=tests/scale --ignore=tests/risk \
	--ignore=tests/streams --ignore=tests/shared_ratelimit \
	--ignore=tests/e2e/test_fresh_checkout.py --ignore=tests/e2e/test_signals.py \
	--ignore=tests/e2e/test_bootstrap_and_config.py --ignore=tests/e2e/test_client_address.py \
	--ignore=tests/e2e/test_stream_cli.py --ignore=tests/e2e/test_stream_export_replay.py

# Two test processes by default (pytest-xdist): most tests wait on servers,
# brokers and disks rather than on the CPU, so two halve the run on a two-core
# machine. Every test has its own data dir, database, key prefix and ports; the
# tests that time a server's answers (graceful shutdown, backpressure, fail-fast
# fallbacks) leave margins for a machine that is busy with the other process.
# On more cores: make test XDIST="-n 4"; one process: make test XDIST=.
XDIST ?= -n 2

# Byte-compiled once here: with PYTHONDONTWRITEBYTECODE set (as on some CI images)
# every child process the suite starts would otherwise compile the package again.
test: lint types
	$(PY) -m compileall -q src/strongroom >/dev/null
	$(VENV)/bin/pytest $(XDIST) --cov --cov-report=term $(PYTEST_ARGS)
	STRONGROOM_TEST_DATABASE=postgres $(VENV)/bin/pytest $(XDIST) -q -p no:cacheprovider tests $(PG_PASS_SKIPS) $(PYTEST_ARGS)

unit: $(DEV_STAMP)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || \
		{ echo "Error: wrk is required for benchmarks (apt-get install wrk)" >&2; exit 2; }
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
