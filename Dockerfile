# syntax=docker/dockerfile:1
# The operator image: `kopf run -m modelcycle_operator` (the chart passes the mode flags).
#
#   docker build -t ghcr.io/modelcycle/operator:0.1.0 .
#
# Two stages: the builder turns the project and its pinned dependencies (constraints.txt)
# into wheels; the final image installs only those wheels, with no compiler, no pip cache
# and no source tree, and runs as the unprivileged user 1000 that the chart's restricted
# securityContext expects.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator/modelcycle_operator/ operator/modelcycle_operator/
COPY trainer-image/modelcycle_trainer/ trainer-image/modelcycle_trainer/
# Every dependency resolves to the version pinned in constraints.txt.
RUN pip wheel --wheel-dir /wheels -c constraints.txt '.[operator]'

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="modelcycle-operator" \
      org.opencontainers.image.description="The ModelCycle Kubernetes operator (kopf)" \
      org.opencontainers.image.source="https://github.com/modelcycle/modelcycle" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp
# Only the wheels built above, nothing from an index; the wheels are bind-mounted, not
# copied, so they add no layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/src/constraints.txt,target=/tmp/constraints.txt \
    pip install --no-index --find-links=/wheels -c /tmp/constraints.txt 'modelcycle[operator]' \
    && groupadd --gid 1000 modelcycle \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin modelcycle
USER 1000:1000
WORKDIR /tmp
# kopf's liveness endpoint and the Alertmanager receiver.
EXPOSE 8080 8081
ENTRYPOINT ["kopf", "run", "-m", "modelcycle_operator"]
CMD ["--all-namespaces", "--standalone", "--liveness=http://0.0.0.0:8080/healthz"]
