# syntax=docker/dockerfile:1.7
# maas, GPU image: the CPU image's contents on a CUDA + cuDNN runtime, with onnxruntime-gpu.
#   docker run --rm --gpus all maas:0.1.0-gpu maas-inference
# Build from the repository root, e.g. `make image-gpu`, or
#   docker build -f deploy/docker/gpu.Dockerfile -t maas:0.1.0-gpu .
#
# One pairing, end to end: onnxruntime-gpu 1.31.1 (built for CUDA 13 and cuDNN 9, and
# what onnxruntime-genai-cuda 0.18 needs: onnxruntime-gpu>=1.31) with CUDA and cuDNN from
# its `cuda,cudnn` extras, the nvidia-*-cu13 / nvidia-* 13.x wheels, exactly as the `gpu`
# extra in pyproject.toml installs it outside the image. maas calls
# onnxruntime.preload_dlls() to load them. The base image only supplies the driver
# check (NVIDIA_REQUIRE_CUDA: a host driver R580+ for CUDA 13) and libcuda comes from the
# host through the NVIDIA container toolkit. A mismatch would not fail by itself (ORT
# falls back to the CPU), so the image sets MAAS_INFERENCE_REQUIRE_CUDA=true and
# maas-inference fails loads that would not run on CUDA.
# TensorRT is not installed: leave `tensorrt` out of a model's providers with this image
# (the default, `auto`, is CUDA then CPU).
# Versions are listed in docs/kubernetes.md ("Image versions").

ARG PYTHON_IMAGE=python:3.11.18-slim-trixie
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# ---- source: the package tree with its generated stubs, built into a wheel -----------
FROM ${PYTHON_IMAGE} AS source
ARG GRPC_VERSION=1.85.1
ARG PROTOBUF_VERSION=7.36.2
ARG UV_VERSION=0.13.8
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CONSTRAINT=/constraints.txt
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
RUN printf 'grpcio==%s\ngrpcio-tools==%s\nprotobuf==%s\n' \
        "${GRPC_VERSION}" "${GRPC_VERSION}" "${PROTOBUF_VERSION}" >/constraints.txt \
    && pip install "grpcio-tools==${GRPC_VERSION}" "uv==${UV_VERSION}"
WORKDIR /src
COPY Makefile pyproject.toml README.md ./
COPY proto/ proto/
RUN make proto PY=/usr/local/bin/python
COPY services/ services/
COPY tools/ tools/
RUN pip wheel --no-deps --wheel-dir /wheels /src

# ---- model: the demo model, exported from PyTorch (CPU wheels) -----------------------
FROM source AS model
ARG TORCH_VERSION=2.13.0
RUN python -m venv /opt/export \
    && /opt/export/bin/pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}" \
    && /opt/export/bin/pip install "/src[cpu,export]" \
    && /opt/export/bin/python -m tools.examples --out /models \
    && test -s /models/digits/1/model.onnx

# ---- venv: Python 3.11 and the runtime environment, on the CUDA base -----------------
# Ubuntu 24.04 has no Python 3.11, so uv installs a standalone CPython
# (python-build-standalone, relocatable) under /opt/maas/python. Installing here, on the
# runtime's own base, makes pip pick wheels for this glibc.
FROM ${CUDA_IMAGE} AS venv
ARG PYTHON_VERSION=3.11.18
# Must equal the pin of the `gpu` extra in pyproject.toml.
ARG ORT_GPU_VERSION=1.31.1
ENV UV_PYTHON_INSTALL_DIR=/opt/maas/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
COPY --from=source /usr/local/bin/uv /usr/local/bin/uv
COPY --from=source /constraints.txt /constraints.txt
COPY --from=source /wheels /wheels
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/maas/venv \
    && uv pip install --python /opt/maas/venv/bin/python --constraint /constraints.txt \
        "maas[gpu,postgres,s3,redis] @ file://$(ls /wheels/maas-*.whl)" \
        "onnxruntime-gpu[cuda,cudnn]==${ORT_GPU_VERSION}"

# ---- runtime --------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS runtime
ARG CUDA_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="maas-gpu" \
      org.opencontainers.image.description="Model-as-a-Service: ONNX models over the KServe v2 gRPC protocol (CUDA)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="${CUDA_IMAGE}"
RUN groupadd --system --gid 10001 maas \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin maas \
    && install -d -o 10001 -g 10001 /var/lib/maas/registry /var/cache/maas
COPY --from=venv /opt/maas/python /opt/maas/python
COPY --from=venv /opt/maas/venv /opt/maas/venv
COPY --from=model /models/digits/1/model.onnx /opt/maas/models/digits.onnx
ENV PATH=/opt/maas/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAAS_REGISTRY_DATA_DIR=/var/lib/maas/registry \
    MAAS_INFERENCE_CACHE_DIR=/var/cache/maas \
    MAAS_INFERENCE_REQUIRE_CUDA=true \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /opt/maas
USER 10001:10001
EXPOSE 8001 9001 8011 9011 8021 9021
CMD ["maas", "--help"]
