# Two commands on a fresh machine: `make run` and `make test`. Both create .venv when it is
# missing and install what they need (PyTorch first, as the CPU build, so that nothing pulls
# a CUDA build), and the browser's front-end libraries from ui/package-lock.json (npm ci).
# `make test` also installs Debian's chromium for the browser tests when it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
PYTEST_ARGS ?=
UI_STAMP := ui/node_modules/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: install run test test-unit lint migrate bench demo clean

install: $(STAMP) $(UI_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(UI_STAMP): ui/package.json ui/package-lock.json
	npm ci --prefix ui --no-audit --no-fund
	touch $(UI_STAMP)

$(CHROMIUM):
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

## Run the whole system locally: embedded PostgreSQL, ML service on 8001, gateway on 8000.
run: $(STAMP) $(UI_STAMP)
	$(BIN)/latina run

## Run every test (unit, integration against real PostgreSQL and a real S3 server, ...).
test: $(STAMP) $(UI_STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway ml_service shared tests
	$(BIN)/ruff format --check gateway ml_service shared tests
	$(BIN)/mypy

migrate: $(STAMP)
	$(BIN)/latina migrate

## A simulated trainer rates 50 samples on a fresh local stack: learning curve, prompt
## lineage, A/B decisions, and demo-output/rating-curve.png. Past phase 1 (reward model, active
## learning, prediction error): make demo DEMO_ARGS="--samples 80".
demo: $(STAMP) $(UI_STAMP)
	$(BIN)/python -m tests.demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache ui/node_modules test-output
