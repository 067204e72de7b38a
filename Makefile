# The quick start is `make demo` and `make test`; both set themselves up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all setup peers test lint typecheck pytest demo bench clean

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

bench: $(STAMP)
	@for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
	@echo "(the peers cache .cache/peers is kept; remove it by hand to rebuild SPIRE, Helm and Keycloak)"
