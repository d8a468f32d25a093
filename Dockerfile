# syntax=docker/dockerfile:1
# One image for every role: the command is `ratesvc <role>` (run | api | collector | persister |
# migrate | sim), e.g. `docker run --rm ratesvc:local api --host 0.0.0.0`. See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a wheel of the project, installed with its dependencies into /opt/venv
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/ratesvc-*.whl

# ---- runtime: the venv, the migrations and a non-root user; no compilers, no pip caches
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data \
    RATESVC_HEALTHCHECK_URL=http://127.0.0.1:8000/health
RUN groupadd --system --gid 10001 ratesvc \
    && useradd --system --uid 10001 --gid ratesvc --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin ratesvc \
    && mkdir -p /data \
    && chown ratesvc:ratesvc /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# `ratesvc migrate` finds the migrations in ./aerich_migrations (the working directory).
COPY aerich_migrations ./aerich_migrations
USER 10001:10001
# api :8000, collector metrics :9101, persister metrics :9102, sim :18443 and :18444
EXPOSE 8000 9101 9102
# Every role answers HTTP somewhere; compose sets RATESVC_HEALTHCHECK_URL per role
# (api /health, collector :9101/metrics, persister :9102/metrics, sim :18443/_sim/state).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(os.environ['RATESVC_HEALTHCHECK_URL'], timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["ratesvc"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
