# syntax=docker/dockerfile:1
#
# Action Links as a container: `docker compose up` (docker-compose.yml) runs it
# next to PostgreSQL. Two stages: the first builds wheels for the package and
# every dependency, the second installs them into a clean python:3.11-slim
# without pip's cache, compilers or the wheels themselves (they are bind-mounted
# for the install only), and runs as an unprivileged user.

# --- build: wheels for the package and its dependencies -------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Every dependency ships manylinux wheels for amd64 and arm64, so no compiler is
# installed; if one ever needs building, install build-essential here, never below.
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY service ./service
# The wheel carries the migrations (pyproject: alembic -> service/_alembic).
RUN pip wheel --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------
FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="action-links" \
      org.opencontainers.image.description="Signed, single-use (or N-use) action links as a service"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels action-links \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Ready = the database answers and its schema is the newest (GET /readyz). No curl
# in the image: the health check is a line of Python.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
ENTRYPOINT ["action-links"]
# SIGTERM (docker stop) finishes in-flight requests, stops background work and
# exits 0 within about 10 s; give the container at least 15 s to stop.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
