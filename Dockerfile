# statecast: gunicorn serving the registry on :8000, non-root, kernels compiled at build.
FROM python:3.11-slim

# Numba's omp threading layer needs libgomp1 on slim images.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 statecast \
    && mkdir -p /data/registry /data/state \
    && chown -R statecast /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY kernels ./kernels
COPY models ./models
COPY service ./service

ENV NUMBA_CACHE_DIR=/app/.numba-cache \
    NUMBA_THREADING_LAYER=omp \
    STATECAST_HOST=0.0.0.0 \
    STATECAST_PORT=8000 \
    STATECAST_REGISTRY=/data/registry \
    STATECAST_STORE=sqlite:/data/state/statecast.db \
    PIP_NO_CACHE_DIR=1

RUN sh service/deploy/install.sh redis \
    && chown -R statecast /app

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
CMD ["statecast", "serve"]
