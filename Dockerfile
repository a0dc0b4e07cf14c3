# syntax=docker/dockerfile:1.7
# The kbrelease image: the CLI, the search service and the bundled models.
# Every Argo step and the service Deployment run it (`kbrelease argo render`
# names it through deploy.image / deploy.tag / deploy.gpu_tag).
#
#   docker build -t ghcr.io/kbrelease/kbrelease:0.1.0 .                          # CPU (torch 2.13.0 CPU build)
#   docker build --build-arg VARIANT=gpu -t ghcr.io/kbrelease/kbrelease:0.1.0-gpu .  # GPU (CUDA torch) for image steps
#
# Versions are pinned: the base image by its full tag, Python packages by
# constraints.txt (the tested set), torch by TORCH_VERSION.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_CPU=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_GPU=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/kbrelease
ENV PATH=/opt/kbrelease/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY src ./src
# torch first, from the variant's index: with it present nothing asks pip for
# another torch. constraints.txt pins the CPU build, so its torch line is dropped.
RUN case "$VARIANT" in \
      cpu) index="$TORCH_INDEX_CPU" ;; \
      gpu) index="$TORCH_INDEX_GPU" ;; \
      *) echo "VARIANT must be cpu or gpu, not $VARIANT" >&2; exit 2 ;; \
    esac \
 && pip install --index-url "$index" "torch==${TORCH_VERSION}" \
 && grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
 && pip install -c /tmp/constraints.txt . \
 && kbrelease --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="kbrelease" \
      org.opencontainers.image.description="Publish knowledge bases into Milvus as verified, reversible releases" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.kbrelease.variant="${VARIANT}"
# A fixed non-root user (10001): the rendered manifests run as it and give the
# workspace volume to its group (fsGroup).
RUN groupadd --system --gid 10001 kbrelease \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin kbrelease \
 && mkdir -p /workspace /etc/kbrelease \
 && chown 10001:10001 /workspace
COPY --from=build /opt/kbrelease /opt/kbrelease
# HOME on /tmp: the root filesystem is read-only in the pods; models load from
# the installed packages and never from a hub.
ENV PATH=/opt/kbrelease/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    KBRELEASE_WORKSPACE=/workspace
WORKDIR /workspace
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["kbrelease"]
CMD ["serve"]
