# The harness on CPU torch: the image clusters/kuberay/ runs (head and workers), and one any Ray 2.60 node can run.
#
#   docker build -t your-registry/harness:0.1.0 .        # from the root of the checkout; the tag the manifests name
#   docker run --rm your-registry/harness:0.1.0 harness scenarios list
#   docker push your-registry/harness:0.1.0
#
# NOT BUILT HERE: the machine this was written on runs no image builder. tests/test_image.py lints this file with
# hadolint and checks that what it copies is what the package needs; the first real build is yours.
#
# Base: the official python:3.11-slim-bookworm (Debian 12, Python 3.11: what pyproject's requires-python and the
# cluster configs' venvs use), pinned by digest so a rebuild gets the same OS and Python. The digest was not pulled
# or verified here: it is the one two unrelated public Dockerfiles pin for that tag, found by searching public
# GitHub sources. The tag is rebuilt upstream often; to take a newer one, or to check this one before you trust it:
#   docker buildx imagetools inspect python:3.11-slim-bookworm     # the index digest (amd64 and arm64 together)
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

# wget: KubeRay's readiness and liveness probes run it inside Ray's containers. Its version is the one Debian 12
# ships at the pinned base (a version pin would differ between amd64 and arm64 builds).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*

# torch from PyTorch's CPU index first (about 200 MB, where PyPI's default build brings 2 GB of CUDA libraries);
# the harness's own pin (torch==2.13.0) is then already met by 2.13.0+cpu. Both amd64 and arm64 wheels exist.
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu

# The package, with its scenarios: harness/scenarios links to scenarios/, and the wheel carries them, so
# `harness run cloud-vs-edge` works in the image without a checkout. The source is removed once installed.
COPY pyproject.toml README.md /tmp/harness-src/
COPY harness/ /tmp/harness-src/harness/
COPY scenarios/ /tmp/harness-src/scenarios/
RUN pip install --no-cache-dir /tmp/harness-src \
    && rm -rf /tmp/harness-src \
    && harness scenarios list

# Non-root: Ray and the harness need no privilege. uid 1000, which the manifests' fsGroup names, so the results
# volume is writable.
RUN useradd --create-home --uid 1000 --shell /bin/bash harness
USER 1000
WORKDIR /home/harness

# No HEALTHCHECK: Kubernetes ignores Docker's, and KubeRay gives each Ray container its own probes; a one-off
# `docker run` of a sweep has nothing long-lived to check.
HEALTHCHECK NONE
CMD ["harness", "scenarios", "list"]
