# syntax=docker/dockerfile:1
# Quarry images, one per target:
#   docker build --target serve-cpu     -t quarryml:cpu .        # slim CPU serving, no torch
#   docker build --target inference-gpu -t quarryml:gpu .        # ONNX Runtime on CUDA + cuDNN
#   docker build --target training      -t quarryml:training .   # torch, for `quarry worker`
# Each runs as a non-root user (uid 10001) with its data in /data, and checks its own health.

ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# --- build: one wheel of quarryml, installed by every runtime stage ----------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY contracts ./contracts
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- serve-cpu: the public API or any CPU module; ONNX Runtime on CPU, no torch -----------------
FROM ${PYTHON_IMAGE} AS serve-cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    QUARRY_HOST=0.0.0.0 QUARRY_PORT=8000 QUARRY_DATA_DIR=/data QUARRY_LOG_FORMAT=json
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin quarry \
    && mkdir /data && chown quarry:quarry /data
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/quarryml-*.whl)[cpu]" && rm -rf /wheels
USER 10001
WORKDIR /home/quarry
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('QUARRY_PORT', '8000'), timeout=4)"
ENTRYPOINT ["quarry"]
CMD ["serve"]

# --- inference-gpu: the inference module on a GPU host (CUDA 12 and cuDNN 9 from the base) ------
FROM ${CUDA_IMAGE} AS inference-gpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    QUARRY_HOST=0.0.0.0 QUARRY_PORT=8000 QUARRY_DATA_DIR=/data QUARRY_LOG_FORMAT=json \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin quarry \
    && mkdir /data && chown quarry:quarry /data
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/quarryml-*.whl)[gpu]" && rm -rf /wheels
USER 10001
WORKDIR /home/quarry
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('QUARRY_PORT', '8000'), timeout=4)"
ENTRYPOINT ["quarry"]
CMD ["serve", "--modules", "inference"]

# --- training: torch (pinned by the extra; its wheel brings the CUDA libraries) -----------------
FROM ${PYTHON_IMAGE} AS training
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    QUARRY_HOST=0.0.0.0 QUARRY_PORT=8000 QUARRY_DATA_DIR=/data QUARRY_LOG_FORMAT=json
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin quarry \
    && mkdir /data && chown quarry:quarry /data
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/quarryml-*.whl)[cpu,training]" && rm -rf /wheels
USER 10001
WORKDIR /home/quarry
VOLUME ["/data"]
EXPOSE 8000
# A worker has no HTTP port: it is healthy while PID 1 runs; `quarry serve` answers /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; b'worker' in open('/proc/1/cmdline', 'rb').read() or urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('QUARRY_PORT', '8000'), timeout=4)"
ENTRYPOINT ["quarry"]
CMD ["worker", "--queues", "training"]
