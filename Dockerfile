# syntax=docker/dockerfile:1
#
# Action Links as a container: `docker compose up` (docker-compose.yml) runs it
# next to PostgreSQL, deploy/kubernetes/ on a cluster. Two stages: the first
# downloads the locked dependencies (requirements/runtime.txt: exact versions
# and their SHA-256 hashes) and builds the package's wheel, the second installs
# them into a clean Python without pip's cache, compilers or the wheels
# themselves (they are bind-mounted for the install only), and runs as an
# unprivileged user.
#
# The base image is pinned by digest: python:3.11-slim-bookworm (Python 3.11.16,
# an index of amd64, arm64 and other platforms), the same minor version as the
# locks (.ci/lock). Renew both together: README.md, "Supply chain".
#
#   docker build \
#     --build-arg VERSION=0.1.0 \
#     --build-arg SOURCE="$(git remote get-url origin)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t action-links:0.1.0 .

# --- build: wheels for the package and its locked dependencies --------------------
FROM python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Every dependency ships manylinux wheels for amd64 and arm64, so no compiler is
# installed; if one ever needs building, install build-essential here, never below.
WORKDIR /src
# Dependencies first: this layer is reused until the lock changes. --require-hashes
# refuses any file whose hash the lock does not list.
COPY requirements ./requirements
RUN pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements/runtime.txt
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY service ./service
# The package itself, built with the locked build backend (requirements/build.txt)
# instead of whatever hatchling is newest. The wheel carries the migrations
# (pyproject: alembic -> service/_alembic).
RUN pip install --require-hashes -r requirements/build.txt \
 && pip wheel --no-build-isolation --no-deps --wheel-dir /dist .

# --- runtime ---------------------------------------------------------------------
FROM python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b AS runtime
# Set by whoever builds (README.md, "Supply chain"); VERSION is pyproject's.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="action-links" \
      org.opencontainers.image.description="Signed, single-use (or N-use) action links as a service" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PORT=8000 \
    WEB_CONCURRENCY=2 \
    ACTION_LINKS_REVISION=${REVISION}
# The locked wheels, checked against the lock's hashes once more, then the package
# without resolving anything (its dependencies are exactly the locked ones).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/dist,target=/dist \
    --mount=type=bind,from=build,source=/src/requirements,target=/requirements \
    pip install --no-index --find-links=/wheels --require-hashes -r /requirements/runtime.txt \
 && pip install --no-index --no-deps /dist/*.whl \
 && pip check \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Liveness: the process answers (GET /healthz). Readiness (GET /readyz: the database
# answers and its schema is the newest) is for the orchestrator's load balancing;
# as the health check it would have every container restarted during a database
# outage. No curl in the image: the check is a line of Python, on $PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
ENTRYPOINT ["action-links"]
# Listens on $PORT with $WEB_CONCURRENCY workers (serve reads both).
# SIGTERM (docker stop) finishes in-flight requests, stops background work and
# exits 0 within about 10 s; give the container at least 15 s to stop.
CMD ["serve", "--host", "0.0.0.0"]
