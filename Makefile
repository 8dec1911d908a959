# Thin targets, one command each. `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= cleanroom.toml
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install proto lint typecheck test bench demo serve toolkit clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py cleanroom/matching/_kernel.c package.json
	@$(PYTHON) -c "import ctypes.util, sys; sys.exit(ctypes.util.find_library('sodium') is None)" \
		|| { echo "libsodium is missing: install it (Debian: apt-get install libsodium23)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

install: $(STAMP) ## Make .venv and install the project with its development tools

proto: $(STAMP) ## Regenerate cleanroom/v1 from protos/
	$(BIN)/python scripts/generate_protos.py

lint: $(STAMP) node_modules/.installed ## ruff, mypy, buf lint and buf format
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	npx --no-install buf lint
	npx --no-install buf format --diff --exit-code

typecheck: $(STAMP) ## mypy (strict) on cleanroom and partners
	$(BIN)/mypy

test: $(STAMP) ## Run the whole test suite
	$(BIN)/python -m pytest

bench: $(STAMP) ## Benchmarks beside their baselines, into bench-results/ (BENCH_ARGS=--quick)
	$(BIN)/python -m bench $(BENCH_ARGS)

demo: $(STAMP) ## Run the end-to-end demo: three brands, a report, the query log
	$(BIN)/cleanroom demo

serve: $(STAMP) ## Serve with CONFIG (default cleanroom.toml)
	$(BIN)/cleanroom serve --config $(CONFIG)

toolkit: $(STAMP) ## Build the partner toolkit's own wheel (no server code) into dist/
	$(BIN)/python scripts/build_toolkit.py --out dist

clean: ## Remove the environment, caches and demo output
	rm -rf $(VENV) node_modules dist demo-run .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
