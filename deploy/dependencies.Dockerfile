# fedmjp's dependencies in a venv, the image deploy/Dockerfile builds on. Built by
# scripts/docker_build.sh only when the wheelhouse changes: the wheels come over HTTP from the
# host (WHEELS, a local http.server over the wheelhouse, reached with --network host), so
# they are neither in the build context nor in any layer, and the image holds one venv.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG WHEELS
LABEL org.opencontainers.image.title="fedmjp-dependencies"
RUN python3 -m venv /opt/venv \
    && PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 /opt/venv/bin/pip install --quiet --no-index \
       --trusted-host 127.0.0.1 --find-links "${WHEELS}/" -r "${WHEELS}/requirements.txt"
