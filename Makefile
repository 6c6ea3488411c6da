# The two commands: `make serve` sets up and starts Reel; `make test` sets up and runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

# `make serve PORT=9000` (HOST, PORT, DATA_DIR, given on make's command line or in the
# environment) passes reel the matching flag. Flags override reel's settings, so only those are
# passed: otherwise REEL_HOST, REEL_PORT and REEL_DATA_DIR decide, defaulting to 127.0.0.1, 8000
# and ./data.
flag_if_given = $(if $(filter-out undefined,$(origin $(1))),$(2) '$($(1))')
SERVE_FLAGS = $(call flag_if_given,HOST,--host) $(call flag_if_given,PORT,--port) $(call flag_if_given,DATA_DIR,--data-dir)

.PHONY: serve test lint key clean check-services check-node

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# The tests run tiny diffusers models on the CPU: a CPU build of torch goes in first, so the
# models extra does not pull a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q '$(TORCH_CPU)'
	$(BIN)/pip install -q -e '.[test,models]'
	touch $@

# Real models need an NVIDIA GPU: the models extra (torch, diffusers: several GB) is installed
# only where nvidia-smi finds one, or with REEL_INSTALL_MODELS=1. Elsewhere Reel serves every
# model with the CPU sandbox and says so loudly.
$(VENV)/.installed-models: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[models]'
	touch $@

serve: $(VENV)/.installed
	@if [ "$(REEL_INSTALL_MODELS)" = 1 ] || nvidia-smi -L >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(VENV)/.installed-models; \
	else \
		echo "make serve: NO NVIDIA GPU FOUND - not installing the models extra; every model is served by"; \
		echo "the CPU SANDBOX (not AI generation). REEL_INSTALL_MODELS=1 make serve installs it anyway."; \
	fi
	$(BIN)/reel serve $(SERVE_FLAGS)

key: $(VENV)/.installed
	@$(BIN)/reel keys create $(call flag_if_given,DATA_DIR,--data-dir)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The playground's browser tests drive Debian's chromium: Playwright cannot download browsers here.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@echo "installing Debian's chromium for the browser tests"
	@SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	{ $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } \
	|| { echo "could not install chromium: run 'apt-get install chromium' as root" >&2; exit 1; }
	@test -x $@ || { echo "chromium installed but $@ is missing" >&2; exit 1; }

# The PostgreSQL tests need the server on 127.0.0.1:5432 (user postgres, trust auth); they fail,
# never skip, without it. Start it once if it is down; otherwise stop here and say why.
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432
check-services: $(VENV)/.installed
	@pg_isready -q -h $(PG_HOST) -p $(PG_PORT) || { \
		echo "PostgreSQL is not answering on $(PG_HOST):$(PG_PORT); trying to start it"; \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1) main start || true; \
		for i in $$(seq 20); do pg_isready -q -h $(PG_HOST) -p $(PG_PORT) && break; sleep 0.5; done; \
	}
	@$(BIN)/python -c "import psycopg; psycopg.connect('postgresql://postgres@$(PG_HOST):$(PG_PORT)/postgres', connect_timeout=5).close()" \
		|| { echo "FAILED: PostgreSQL on $(PG_HOST):$(PG_PORT) (user postgres, trust auth) is needed by the tests and is not usable" >&2; exit 1; }

# The npm SDK tests (tests/api/test_npm_sdks.py) run node scripts; pytest installs the SDKs with
# npm ci. Say so now rather than after the rest of the suite has run.
NODE_MIN ?= 18
check-node:
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= $(NODE_MIN) ? 0 : 1)' 2>/dev/null \
		&& command -v npm >/dev/null \
		|| { echo "FAILED: the npm SDK tests need Node >= $(NODE_MIN) and npm on PATH (node: $$(node --version 2>&1))" >&2; exit 1; }

test: lint $(CHROMIUM) check-services check-node
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/js/node_modules
