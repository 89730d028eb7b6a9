# Two commands on a fresh machine: `make run` and `make test`. Both create .venv when it is
# missing and sync it to requirements.lock (every package at its locked version, hashes checked,
# PyTorch as its CPU build), and install the browser's front-end libraries from
# ui/package-lock.json (npm ci). `make test` also installs Debian's chromium for the browser
# tests when it is missing, and the Serverless Framework from infra/package-lock.json for the
# production rehearsal. `make lock` relocks after pyproject.toml's dependencies change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
LOCK   := requirements.lock
# uv does not read pip's configuration: hand it the local wheel folder pip is configured with
# (where this machine keeps PyTorch's CPU build). Elsewhere set UV_FIND_LINKS or
# UV_EXTRA_INDEX_URL to a source of torch==2.13.0+cpu (PyTorch's CPU index).
PIP_FIND_LINKS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
export UV_FIND_LINKS ?= $(PIP_FIND_LINKS)
export UV_PYTHON := $(BIN)/python
PYTEST_ARGS ?=
UI_STAMP := ui/node_modules/.installed
CHROMIUM := /usr/bin/chromium
INFRA_STAMP := infra/node_modules/.installed
SLS := SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off infra/node_modules/.bin/serverless
STAGE ?= dev
REGION ?= eu-west-1
SLS_ARGS = --stage $(STAGE) --region $(REGION) --param="mlImage=$(ML_IMAGE)"
# `make package` needs no AWS account: the ML image is a placeholder digest (never deployed).
PACKAGE_DIR ?= .serverless
PACKAGE_PARAMS ?=
PACKAGE_IMAGE := 000000000000.dkr.ecr.$(REGION).amazonaws.com/latina-ml@sha256:0000000000000000000000000000000000000000000000000000000000000000

.PHONY: install uv python-env lock run test test-unit lint migrate bench demo clean package \
	package-artifacts deploy ml-image

install: python-env $(UI_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

## uv, at the version and hashes that requirements.lock gives it, installed with the venv's pip.
uv: | $(BIN)/python
	@$(BIN)/python infra/lock.py pin uv > $(VENV)/uv-requirement.txt
	@cmp -s $(VENV)/uv-requirement.txt $(VENV)/uv-installed.txt 2>/dev/null && [ -x $(UV) ] || { \
		$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(VENV)/uv-requirement.txt && \
		cp $(VENV)/uv-requirement.txt $(VENV)/uv-installed.txt; }

## .venv exactly as requirements.lock says, on every run (about a second when
## nothing drifted): a version changed by hand is put back, a package not in the lock removed.
## Refuses to run when pyproject.toml's dependencies changed since the lock was made.
python-env: uv
	@$(PYTHON) infra/lock.py check
	@# the locked packages first: the editable install below builds with the locked setuptools
	$(UV) pip install --quiet --no-deps -r $(LOCK)
	@printf -- '-r $(CURDIR)/$(LOCK)\n-e $(CURDIR)\n' > $(VENV)/sync.txt
	@# from uv's cache when it holds everything (fast), else from the index
	$(UV) pip sync --quiet --no-build-isolation --strict --offline $(VENV)/sync.txt 2>/dev/null || \
		$(UV) pip sync --quiet --no-build-isolation --strict $(VENV)/sync.txt

## Relock after changing pyproject.toml's dependencies (UPGRADE=1 also moves every pin to the
## newest release allowed); writes requirements.lock and infra/requirements-{gateway,ml}.txt.
lock: uv
	$(BIN)/python infra/lock.py write

$(UI_STAMP): ui/package.json ui/package-lock.json
	npm ci --prefix ui --no-audit --no-fund
	touch $(UI_STAMP)

$(INFRA_STAMP): infra/package.json infra/package-lock.json
	npm ci --prefix infra --no-audit --no-fund
	touch $(INFRA_STAMP)

$(CHROMIUM):
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

## Run the whole system locally: embedded PostgreSQL, ML service on 8001, gateway on 8000.
run: python-env $(UI_STAMP)
	$(BIN)/latina run

## Run every test (unit, integration against real PostgreSQL and a real S3 server, the browser
## UI in Chromium, the production rehearsal of the packaged functions, ...).
test: python-env $(UI_STAMP) $(INFRA_STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: python-env
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: python-env
	$(BIN)/ruff check gateway ml_service shared latina_cli tests infra
	$(BIN)/ruff format --check gateway ml_service shared latina_cli tests infra
	$(BIN)/mypy
	$(BIN)/lint-imports

migrate: python-env
	$(BIN)/latina migrate

## A simulated trainer rates 50 samples on a fresh local stack: learning curve, prompt
## lineage, A/B decisions, and demo-output/rating-curve.png. Past phase 1 (reward model, active
## learning, prediction error): make demo DEMO_ARGS="--samples 80".
demo: python-env $(UI_STAMP)
	$(BIN)/python -m tests.demo $(DEMO_ARGS)

bench: python-env
	$(BIN)/python -m tests.benchmarks $(BENCH_ARGS)

## The CloudFormation template, offline (no AWS account), then cfn-lint on it: no errors and no
## warnings but the framework's known W3005. CI runs this.
package: python-env $(UI_STAMP) $(INFRA_STAMP)
	$(MAKE) --no-print-directory package-artifacts
	$(BIN)/cfn-lint --ignore-checks W3005 -- $(PACKAGE_DIR)/cloudformation-template-update-stack.json
	@echo "template: $(PACKAGE_DIR)/cloudformation-template-update-stack.json (cfn-lint clean)"

## `serverless package` into PACKAGE_DIR, and the zip and template checked; the production
## rehearsal (tests/rehearsal/) packages with this too, with PACKAGE_PARAMS for its Python.
package-artifacts:
	rm -rf $(PACKAGE_DIR)
	$(SLS) package --stage $(STAGE) --region $(REGION) --param="mlImage=$(PACKAGE_IMAGE)" \
		$(PACKAGE_PARAMS) --package $(PACKAGE_DIR)
	$(BIN)/python infra/check_package.py $(PACKAGE_DIR)

## The ML service's Lambda image from infra/Dockerfile.ml, tagged latina-ml:<short commit>. Needs
## a Docker engine; without one, tests/rehearsal/ builds the same Dockerfile's task root instead.
ml-image:
	@why=$$(docker info 2>&1 >/dev/null) || { \
		echo "no Docker engine here: $$(echo "$$why" | tail -n 1)" >&2; \
		echo "(the ML image cannot be built on this machine; tests/rehearsal/ rehearses its task root without Docker)" >&2; \
		exit 2; }
	docker build -f infra/Dockerfile.ml -t latina-ml:$$(git rev-parse --short HEAD) .

## Deploy a stage: make deploy STAGE=dev|prod ML_IMAGE=<ecr repo>@sha256:<digest>. On an existing
## stack the migrate function is updated and run first, so new code never meets an old schema.
deploy: python-env $(UI_STAMP) $(INFRA_STAMP)
	@case "$(ML_IMAGE)" in *@sha256:*) ;; *) echo "ML_IMAGE=<ecr repo>@sha256:<digest> is required (deploy by digest, not tag)" >&2; exit 2;; esac
	@if $(SLS) info $(SLS_ARGS) >/dev/null 2>&1; then \
		echo "migrating $(STAGE) before the new code goes live"; \
		$(SLS) deploy function --function migrate $(SLS_ARGS) && \
		$(SLS) invoke --function migrate $(SLS_ARGS) || exit 1; \
	fi
	$(SLS) deploy $(SLS_ARGS)
	$(SLS) invoke --function migrate $(SLS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache ui/node_modules infra/node_modules test-output .serverless
