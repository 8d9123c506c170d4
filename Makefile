# statecast: `make test` runs the linters and the whole suite on a fresh machine.
# Each target sets itself up: a virtualenv in .venv with the project and its test extras.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba-cache
export NUMBA_THREADING_LAYER ?= omp
export KERAS_BACKEND ?= torch

.PHONY: test lint venv warm clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU build (the torch extra); install it first, from its own line,
	# so that nothing else pulls a CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[torch,onnx,dev]"
	touch $@

venv: $(BIN)/.installed

warm: venv
	$(BIN)/python -m kernels.warm

test: warm lint
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check kernels models service tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .numba-cache
