# statecast: gunicorn serving the model registry, non-root, its kernels compiled at build.
#
# Builds on any network (README, "Deploy it"):
#   --build-arg BASE_IMAGE=...    another base: Debian-like, `python` 3.11 and pip on PATH
#   --build-arg PIP_INDEX_URL=... a package index mirror
#   --secret id=ca-bundle,src=/path/to/ca-bundle.pem
#                                 a CA bundle that pip and apt trust during the build (a proxy
#                                 that re-signs TLS); mounted per step, never in a layer.
#                                 Without it pip trusts the base image's CA store.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS runtime
# Numba's omp threading layer needs libgomp1 on slim images. With a CA secret apt downloads
# as root: its sandbox user cannot read the secret (mode 0400).
# hadolint ignore=DL3008
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -f /run/secrets/ca-bundle ]; then \
        set -- -o Acquire::https::CAInfo=/run/secrets/ca-bundle \
            -o APT::Sandbox::User=root; fi \
    && apt-get "$@" update \
    && apt-get "$@" install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 statecast \
    && mkdir -p /data/registry /data/state \
    && chown -R statecast /data
ENV PATH=/opt/statecast/bin:$PATH \
    NUMBA_CACHE_DIR=/opt/statecast/kernel-cache \
    NUMBA_THREADING_LAYER=omp

# The build stage: statecast and its dependencies in a virtualenv, the kernels compiled.
FROM runtime AS build
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/statecast
# The dependencies first, in a layer a change to the sources does not touch (pyproject.toml
# bounds their versions; pip itself is the newest, as service/deploy/install.sh keeps it).
COPY pyproject.toml service/deploy/dependencies.py service/deploy/pip-trust.sh /build/
# hadolint ignore=DL3013
RUN --mount=type=secret,id=ca-bundle,required=false \
    . /build/pip-trust.sh \
    && python /build/dependencies.py /build/pyproject.toml redis > /build/requirements.txt \
    && python -m pip install --quiet --upgrade pip \
    && python -m pip install --quiet -r /build/requirements.txt
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kernels ./kernels
COPY models ./models
COPY service ./service
RUN --mount=type=secret,id=ca-bundle,required=false \
    . /build/pip-trust.sh \
    && sh service/deploy/install.sh redis \
    && python -m compileall -q /app \
    && find /opt/statecast/lib -depth -type d -name tests -path "*-packages/*/tests" \
        -exec rm -rf {} + \
    && chown -R statecast /opt/statecast/kernel-cache

# The image: the runtime with the virtualenv and the sources, nothing else of the build.
FROM runtime
COPY --from=build /opt/statecast /opt/statecast
COPY --from=build /app /app
WORKDIR /app
ENV PYTHONUNBUFFERED=1 \
    STATECAST_HOST=0.0.0.0 \
    STATECAST_PORT=8000 \
    STATECAST_REGISTRY=/data/registry \
    STATECAST_STORE=sqlite:/data/state/statecast.db
USER 10001
EXPOSE 8000
VOLUME ["/data/state", "/data/registry"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('STATECAST_PORT', '8000')}/readyz\", timeout=4).status != 200)"]
CMD ["statecast", "serve"]
