# syntax=docker/dockerfile:1.7
# maas, CPU image. One image runs any of the three services; the command picks which:
#   docker run --rm -p 8021:8021 maas:0.1.0 maas-inference
# Build from the repository root (the build context), e.g. `make images`, or
#   docker build -f deploy/docker/cpu.Dockerfile -t maas:0.1.0 .
# cpu.Dockerfile.dockerignore beside this file keeps the context small (BuildKit).
# Versions are pinned here and listed in docs/kubernetes.md ("Image versions").

ARG PYTHON_IMAGE=python:3.11.18-slim-trixie

# ---- source: the package tree with its generated gRPC stubs --------------------------
# grpcio-tools and make live in this stage only.
FROM ${PYTHON_IMAGE} AS source
ARG GRPC_VERSION=1.85.1
ARG PROTOBUF_VERSION=7.36.2
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CONSTRAINT=/constraints.txt
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
# One constraints file for every pip in the build, so the stubs' grpcio/protobuf
# versions are the ones installed beside them.
RUN printf 'grpcio==%s\ngrpcio-tools==%s\nprotobuf==%s\n' \
        "${GRPC_VERSION}" "${GRPC_VERSION}" "${PROTOBUF_VERSION}" >/constraints.txt \
    && pip install "grpcio-tools==${GRPC_VERSION}"
WORKDIR /src
COPY Makefile pyproject.toml README.md ./
COPY proto/ proto/
# `make proto` is the one way stubs are made (STYLE 9); PY points it at this python.
RUN make proto PY=/usr/local/bin/python
COPY services/ services/
COPY tools/ tools/

# ---- venv: the runtime environment, installed from the tree above --------------------
FROM source AS venv
ARG ORT_VERSION=1.32.0
RUN python -m venv /opt/maas/venv \
    && /opt/maas/venv/bin/pip install "/src[cpu,postgres,s3,redis]" "onnxruntime==${ORT_VERSION}" \
    && /opt/maas/venv/bin/pip uninstall --yes pip setuptools

# ---- model: the demo model, exported from PyTorch (CPU wheels) -----------------------
# torch, onnx and onnxscript stay in this stage; only the .onnx file moves on.
FROM source AS model
ARG TORCH_VERSION=2.13.0
RUN python -m venv /opt/export \
    && /opt/export/bin/pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}" \
    && /opt/export/bin/pip install "/src[cpu,export]" \
    && /opt/export/bin/python -m tools.examples --out /models \
    && test -s /models/digits/1/model.onnx

# ---- runtime --------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="maas" \
      org.opencontainers.image.description="Model-as-a-Service: ONNX models over the KServe v2 gRPC protocol (CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# Numeric user 10001 (the chart's runAsUser); its writable places are volumes in k8s.
RUN groupadd --system --gid 10001 maas \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin maas \
    && install -d -o 10001 -g 10001 /var/lib/maas/registry /var/cache/maas \
    && python -m pip uninstall --yes pip setuptools wheel
COPY --from=venv /opt/maas/venv /opt/maas/venv
COPY --from=model /models/digits/1/model.onnx /opt/maas/models/digits.onnx
ENV PATH=/opt/maas/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAAS_REGISTRY_DATA_DIR=/var/lib/maas/registry \
    MAAS_INFERENCE_CACHE_DIR=/var/cache/maas
WORKDIR /opt/maas
USER 10001:10001
# gateway, registry, inference: gRPC then Prometheus metrics.
EXPOSE 8001 9001 8011 9011 8021 9021
CMD ["maas", "--help"]
