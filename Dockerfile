# migweaver's container image: the operator and the node agent (`migweaver operator`,
# `migweaver agent`). Build it with `make image` (docs/installation.md), which first writes
# the repository's own wheel into the build context build/image/wheels/ and then runs
# docker, podman or buildah on this file with build/image/ as the context.
#
# Nothing here names an architecture: the same file builds on amd64 and arm64 (GH200
# nodes) from a multi-architecture base, and every dependency ships wheels for both.
#
# BASE_IMAGE is pinned to a full Python version; any Debian-like image with python3 and
# its venv module will do (make image BASE_IMAGE=...): docs/installation.md builds one
# from Debian packages where no registry is reachable.
ARG BASE_IMAGE=docker.io/library/python:3.12.12-slim-bookworm

# Stage 1: a virtual environment holding the package and its dependencies. The wheels of
# the dependencies come from the package index, or only from the build context when it
# holds them (make image WHEELHOUSE=1, for a build without network).
FROM ${BASE_IMAGE} AS install
ARG PYTHON=python3
ARG PIP_OPTIONS=""
COPY wheels/ /wheels/
RUN ${PYTHON} -m venv /opt/migweaver \
    && /opt/migweaver/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
       ${PIP_OPTIONS} --find-links /wheels /wheels/migweaver-*.whl \
    && /opt/migweaver/bin/migweaver --version

# Stage 2: the base image and the virtual environment, no build tools, no wheels.
FROM ${BASE_IMAGE}
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=https://github.com/migweaver/migweaver
LABEL org.opencontainers.image.title="migweaver" \
      org.opencontainers.image.description="Dynamic NVIDIA MIG for Kubernetes with HAMi's pod API: operator and node agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=install /opt/migweaver /opt/migweaver
ENV PATH=/opt/migweaver/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# Non-root by default (the operator's Deployment asks for the same uid); the agent's
# DaemonSet runs it as root, which NVML's MIG changes need.
USER 65532:65532
ENTRYPOINT ["migweaver"]
CMD ["--help"]
