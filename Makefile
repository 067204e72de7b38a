# The quick start is `make demo` and `make test`; both set themselves up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all setup test lint typecheck pytest demo bench clean

all: test

$(STAMP): pyproject.toml scripts/bootstrap.sh
	PYTHON=$(PYTHON) VENV=$(VENV) ./scripts/bootstrap.sh
	@touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy src/grantbox

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# The alpha/beta demo end to end: needs root (or unprivileged user namespaces) for the sandbox.
demo: $(STAMP)
	$(BIN)/grantbox demo

# Never part of `make test` (tests do not measure time). bench/compare.py puts grantbox side by
# side with nginx direct, squid, tinyproxy and mitmproxy (it installs them itself, runs them on
# free loopback ports; ~6 minutes); then the grant-cache and Python-client proxy benchmarks.
# COMPARE_ARGS="--seconds 10 --rounds 5" (or --only http,tls,idle, --no-sandbox) tunes it.
COMPARE_ARGS ?=
bench: $(STAMP)
	@echo "== bench/compare.py $(COMPARE_ARGS)"; $(BIN)/python bench/compare.py $(COMPARE_ARGS)
	@for b in bench/grants.py bench/proxy.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
