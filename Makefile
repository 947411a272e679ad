# surfacer: one command to set up and run each job from nothing (see README).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH if present, else the pip-installed module (bootstrapped by `make uv`).
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen
DEMO_DIR ?= .surfacer/demo

.PHONY: help uv install lint format check-services test test-quick test-fast demo serve bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-15s %s\n", $$1, $$2}'

uv: ## make sure uv is available (installs it with pip if missing)
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) --version

# Compile bytecode once at install: with PYTHONDONTWRITEBYTECODE set (as on CI machines)
# nothing is cached at run time, and every start would compile pandas, MLflow, ... again.
PACKAGES := common features models training serving discovery simulator surfacer

install: uv ## create .venv and install the locked dependencies (bytecode compiled)
	$(UV) sync --frozen --compile-bytecode
	@$(RUN) python -m compileall -q -j 0 $(PACKAGES)

lint: install ## ruff format check and lint
	$(RUN) ruff format --check .
	$(RUN) ruff check .

format: install ## apply ruff formatting and autofixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

# Tests that need a service carry its marker (pyproject.toml); test-quick leaves them out.
SERVICE_MARKERS := not postgres and not redis and not browser

check-services: install ## check PostgreSQL, Redis and Chromium, one clear line for each missing
	@$(RUN) python .ci/check_services.py

test: check-services lint ## set up from nothing, check the services, lint, run the whole test suite
	$(RUN) pytest

test-quick: install ## the tests that need no service (no PostgreSQL, Redis or Chromium)
	$(RUN) pytest -m "$(SERVICE_MARKERS)"

test-fast: install ## tests without the slow ones
	$(RUN) pytest -m "not slow"

demo: install ## simulate the default ecosystem and run the main job end to end on it
	$(RUN) surfacer demo --out $(DEMO_DIR)

serve: install ## serve @champion and the analyst console on :8000 with a printed dev API key
	$(RUN) surfacer serve --dev-key

bench: install ## run the core benchmarks (features .. quality; the README lists the rest)
	@# bench/serve.py loads the servers with wrk (Debian's package) when it is there
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq wrk >/dev/null) || echo "no wrk: bench/serve.py uses its asyncio client"
	$(RUN) python bench/features.py
	$(RUN) python bench/transform.py
	$(RUN) python bench/train.py
	$(RUN) python bench/serve.py
	$(RUN) python bench/discovery.py
	$(RUN) python bench/startup.py
	$(RUN) python bench/faults.py
	$(RUN) python bench/quality.py

clean: ## remove local state (venv, MLflow store, demo output)
	rm -rf .venv .surfacer .pytest_cache .ruff_cache
