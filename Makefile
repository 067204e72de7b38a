# The quick start is `make demo` and `make test`; both set themselves up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all setup peers test lint typecheck pytest demo bench clean lock

all: test

$(STAMP): pyproject.toml constraints.txt scripts/bootstrap.sh
	PYTHON=$(PYTHON) VENV=$(VENV) ./scripts/bootstrap.sh
	@touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy src/grantbox

# Real SPIRE, Keycloak and Helm (plus a go-spiffe client) for tests/interop and the chart
# tests, built from the registries at pinned versions into .cache/peers; a no-op when warm.
peers: $(STAMP)
	./scripts/peers.sh

pytest: $(STAMP) peers
	$(BIN)/pytest

test: lint typecheck pytest

# The alpha/beta demo end to end: needs root (or unprivileged user namespaces) for the sandbox.
demo: $(STAMP)
	$(BIN)/grantbox demo

# Never part of `make test` (tests do not measure time). bench/compare.py puts grantbox side by
# side with nginx direct, squid, tinyproxy and mitmproxy (it installs them itself, runs them on
# free loopback ports; about 4 minutes); then the grant-cache, event-ingest and Python-client
# proxy benchmarks.
# COMPARE_ARGS="--seconds 10 --rounds 5" (or --only http,tls,idle, --no-sandbox) tunes it.
COMPARE_ARGS ?=
bench: $(STAMP)
	@echo "== bench/compare.py $(COMPARE_ARGS)"; $(BIN)/python bench/compare.py $(COMPARE_ARGS)
	@for b in bench/grants.py bench/ingest.py bench/proxy.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Pins every dependency (all extras, with hashes) in constraints.txt, and the images' subsets
# in deploy/images/*.lock, from the ranges in pyproject.toml. Run after editing dependencies;
# `make lock UPGRADE=1` moves the pins to the newest versions the ranges allow.
LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--no-emit-package grantbox --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "$$(grep -m1 '^uv==' constraints.txt | cut -d' ' -f1)"
	$(LOCK) pyproject.toml --extra dev -o constraints.txt
	$(LOCK) pyproject.toml --extra kubernetes --extra postgresql -c constraints.txt \
		-o deploy/images/gateway.lock
	$(LOCK) deploy/images/sandbox.in -c constraints.txt -o deploy/images/sandbox.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
	@echo "(the peers cache .cache/peers is kept; remove it by hand to rebuild SPIRE, Helm and Keycloak)"
