# statecast: `make serve` serves the bundled model, `make test` runs the linters and the whole
# suite; each sets itself up on a fresh machine.
# Each target sets itself up: a virtualenv in .venv with the project and its test extras.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Numba checks a cached kernel against its own file only, not the kernels it calls: key the
# cache on the kernels' source so that editing any of them recompiles everything.
KERNELS_HASH := $(shell cat kernels/*.py | sha256sum | cut -c1-12)
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba-cache/$(KERNELS_HASH)
export NUMBA_THREADING_LAYER ?= omp
export KERAS_BACKEND ?= torch

.PHONY: test serve lint venv warm clean system-packages

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU build (the torch extra); install it first, from its own line,
	# so that nothing else pulls a CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	# The container's install script (service/deploy/install.sh), run in this virtualenv.
	PATH="$(CURDIR)/$(BIN):$$PATH" sh service/deploy/install.sh torch,onnx,keras,redis,dask,plot,dev
	# Darts and NeuralForecast (the parity tests' oracles) pull Lightning and more: after
	# torch, and then a check that pip kept the CPU build.
	$(BIN)/pip install --quiet -e ".[libraries]"
	$(BIN)/python -c "import torch; v = torch.__version__; assert v.startswith('2.13.0'), v"
	touch $@

venv: $(BIN)/.installed

warm: venv
	$(BIN)/python -m statecast.kernels.warm

test: warm lint system-packages
	$(BIN)/python -m pytest

# The tests start their own Redis servers (never a mock), and build and run the image with
# podman, no Docker engine needed (podman-compose comes from PyPI, in the dev extra): install
# the Debian packages the machine lacks. podman's network stack is named (netavark, with
# aardvark-dns for the compose services' names, and the iptables it drives): apt would
# otherwise pick either stack.
SYSTEM_PACKAGES := redis-server podman runc debootstrap netavark aardvark-dns iptables

system-packages:
	@missing=$$(for package in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q 'ok installed' \
	  || echo $$package; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing" $$missing "(Debian packages)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

serve: venv
	$(BIN)/statecast serve

lint: venv
	$(BIN)/ruff check kernels models service tests bench
	@mkdir -p build/typing/statecast
	@for package in kernels models service; do ln -sfn ../../../$$package build/typing/statecast/$$package; done
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .numba-cache
