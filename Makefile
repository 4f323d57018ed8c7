# vectorops — two commands matter: `make run` and `make test`. Everything else
# (the virtualenv, the tools, the generated stubs) is made on the way.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
NODE_INSTALLED := node_modules/.installed
BUF := node_modules/.bin/buf
STUBS := services/vectorops/.generated
PROTOS := $(shell find protos/vectorops -name '*.proto')
export HF_HUB_OFFLINE := 1

.PHONY: run test soak proto lint-proto lint prometheus bench clean help

help:
	@echo "make run    start Postgres, NATS and the five services (Ctrl-C stops all)"
	@echo "make test   buf lint + unit and integration tests on a real stack"
	@echo "make proto  generate the Python gRPC stubs into services/vectorops"
	@echo "make soak   the full fault matrix: every component SIGKILLed at every checkpoint"
	@echo "make bench  benchmarks (embedder throughput; end-to-end indexing against the embedder alone)"

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

$(NODE_INSTALLED): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(STUBS): $(INSTALLED) $(PROTOS)
	rm -rf services/vectorops
	$(PY) -m grpc_tools.protoc -I protos -I protos/third_party \
		--python_out=services --pyi_out=services --grpc_python_out=services $(PROTOS)
	touch $@

proto: $(STUBS)

lint-proto: $(NODE_INSTALLED)
	$(BUF) lint
	$(BUF) format -d --exit-code

lint: $(STUBS)
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/ruff format --check services tests bench

run: $(STUBS)
	$(PY) -m kit.stack $(if $(REPLICAS),--replicas "$(REPLICAS)")

# The dashboards and alert rules are tested against a real Prometheus (and promtool):
# Debian's package, installed when missing (as root, or through sudo).
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
		( SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		  $$SUDO apt-get update -qq && \
		  $$SUDO apt-get install -y --no-install-recommends prometheus )

test: $(STUBS) lint-proto lint prometheus
	$(PY) -m pytest -q

# The fault matrix's full cross product (make test runs a rotation of it).
soak: $(STUBS)
	VECTOROPS_FAULT_MATRIX=full $(PY) -m pytest -q tests/e2e/test_fault_matrix.py

bench: $(STUBS)
	$(PY) bench/embedder_throughput.py
	$(PY) bench/indexing_throughput.py
	$(PY) bench/reindex_latency.py
	$(PY) bench/embedder_replicas.py

clean:
	rm -rf $(VENV) node_modules services/vectorops
