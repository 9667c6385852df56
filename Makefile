# ModelCycle — the two commands that matter:
#   make demo   bring up the local control plane and run the iris ModelCycle end to end
#   make test   everything the CI runs: lint, types, layers, unit and integration tests
# Both set up what they need on a fresh machine (virtualenv, dependencies, the
# control-plane binaries, built once and cached in ~/.cache/modelcycle).

SHELL := /bin/bash
# Debian's interpreter, not one under /root: pods run as non-root users and must be able
# to execute the virtualenv's python.
PYTHON ?= /usr/bin/python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLUSTER ?= demo
export PYTHONPATH := $(CURDIR)/tests
# Used only if a pinned Go module needs a newer Go than the machine's.
export GOTOOLCHAIN ?= local
export GOFLAGS ?= -buildvcs=false

.PHONY: help venv tools binaries lint typecheck layers unit integration test demo demo-down \
        cluster-up cluster-down cluster-status kind-demo clean

help:
	@grep -E '^#' Makefile | head -5

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq python3-venv)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed tools

# Debian tools the tests use: lua5.1 runs the Argo CD health check as Argo CD would.
tools:
	@command -v lua5.1 >/dev/null || (apt-get update -qq && apt-get install -y -qq lua5.1 >/dev/null)

binaries:
	bash tests/localcluster/build-binaries.sh all

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

layers: venv
	$(VENV)/bin/lint-imports

unit: venv tools
	$(VENV)/bin/pytest tests/unit -q

integration: venv binaries
	$(VENV)/bin/pytest tests/integration -q

test: venv binaries tools
	$(MAKE) --no-print-directory lint typecheck layers
	$(VENV)/bin/pytest tests -q --durations=15

cluster-up: venv
	$(PY) -m localcluster --name $(CLUSTER) up

cluster-down: venv
	$(PY) -m localcluster --name $(CLUSTER) down

cluster-status: venv
	$(PY) -m localcluster --name $(CLUSTER) status

demo: venv binaries
	$(PY) -m localcluster --name $(CLUSTER) up
	bash examples/demo.sh

demo-down: venv
	@pidf=$$($(PY) -m localcluster --name $(CLUSTER) kubeconfig | xargs dirname)/operator.pid; \
	  if [ -f $$pidf ]; then kill $$(cat $$pidf) 2>/dev/null || true; rm -f $$pidf; fi
	$(PY) -m localcluster --name $(CLUSTER) down

kind-demo:
	bash hack/kind-demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
