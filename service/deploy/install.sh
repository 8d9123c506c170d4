#!/bin/sh
# Install statecast into the current Python environment and compile its kernels into
# $NUMBA_CACHE_DIR. The Dockerfile runs it at build time; `make test` runs the same script
# in the test virtualenv, so CI exercises the image's install steps on every run.
#
#   sh service/deploy/install.sh [EXTRAS]     e.g. EXTRAS=redis or torch,onnx,dev
set -eu
cd "$(dirname "$0")/../.."
extras="${1:-}"
python -m pip install --quiet --upgrade pip
if [ -n "$extras" ]; then
  python -m pip install --quiet -e ".[$extras]"
else
  python -m pip install --quiet -e .
fi
python -m statecast.kernels.warm
