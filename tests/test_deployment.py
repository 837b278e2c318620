"""The container and compose files: consistent with each other and with the code, and the
container's own command, with the environment compose gives it, serves and migrates.

The image itself is not built here (no Docker engine on these machines): the
Dockerfile and docker-compose.yml are parsed, and their commands run as local
processes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import FILE_BACKED, Settings
from service.db import schema_head
from tests.support import database
from tests.support.deployment import (
    SECRETS_MOUNT,
    SERVE_VARIABLES,
    Stage,
    container_command,
    container_environment,
    dockerfile_stages,
    image_environment,
    image_healthcheck,
    load_compose,
    local_command,
    local_healthcheck,
    option,
    parse_command,
    service_environment,
)
from tests.support.processes import REPO_ROOT, free_port, running_command

SERVER_STATES = ("service_healthy", "service_completed_successfully")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def setting_names() -> set[str]:
    """Every environment variable Settings reads."""
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias.upper() if isinstance(alias, str) else name.upper())
    return names


def healthcheck_of(service: dict[str, Any], stages: list[Stage]) -> list[str] | None:
    """The health check command a container of this service runs, if any."""
    check = service.get("healthcheck")
    if check is not None:
        if check.get("disable"):
            return None
        test = check["test"]
        assert isinstance(test, list), test
        assert test[0] in ("CMD", "CMD-SHELL"), test
        return [str(part) for part in test[1:]]
    if "build" in service:
        return image_healthcheck(stages)
    return None


def test_dockerfile_is_multi_stage_slim_and_unprivileged(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "wheels are built in a stage of their own"
    runtime = stages[-1]
    assert runtime.base.partition("@")[0] == "python:3.11-slim-bookworm"
    env = " ".join(i.arguments for i in runtime.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    user = runtime.last("USER").arguments.split(":")[0]
    assert user not in ("root", "0"), "the service runs as an unprivileged user"
    keywords = [i.keyword for i in runtime.instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    runs = " ".join(i.arguments for i in runtime.all("RUN"))
    assert not re.search(r"build-essential|\bgcc\b|apt-get install", runs), "no compilers"
    assert "PIP_NO_CACHE_DIR=1" in env or "--no-cache-dir" in runs, "no pip cache"
    assert "from=build" in runs, "the runtime installs the wheels built in the first stage"
    assert not runtime.all("COPY"), "sources stay in the build stage"
    for copy in stages[0].all("COPY"):
        for source in copy.arguments.split()[:-1]:
            assert (REPO_ROOT / source).exists(), source


def test_dockerfile_command_health_check_and_port_agree(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert runtime.last("ENTRYPOINT").exec_form() == ["action-links"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["action-links"] == "service.cli:main"
    command = runtime.last("CMD").exec_form()
    env = image_environment(stages)
    args = parse_command(["action-links", *command], env)
    assert args.command == "serve"
    assert not args.dev
    assert "--port" not in command, "the port is PORT's"
    assert "--workers" not in command, "the worker count is WEB_CONCURRENCY's"
    exposed = runtime.last("EXPOSE").arguments
    assert exposed == env["PORT"] == str(args.port) == "8000"
    assert str(args.workers) == env["WEB_CONCURRENCY"] == "2"
    assert args.host == "0.0.0.0"
    check = healthcheck_of({"build": "."}, stages)
    assert check is not None
    assert check[0] == "python", "the image has no curl: the health check is Python"
    # Liveness, not readiness: a database outage must not restart every container.
    assert "http://127.0.0.1:%s/healthz" in check[-1]
    assert "os.environ.get('PORT', '8000')" in check[-1], "the check follows PORT"
    for name, value in re.findall(r"--(\w+(?:-\w+)*)=(\S+)", runtime.last("HEALTHCHECK").arguments):
        assert name in ("interval", "timeout", "start-period", "retries"), name
        assert value


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", ".venv", "tests", "secrets", "**/__pycache__", ".pytest_cache"):
        assert entry in ignored, entry
    for needed in (
        "service",
        "alembic",
        "pyproject.toml",
        "README.md",
        "alembic.ini",
        "requirements",
    ):
        assert needed not in ignored, needed


def test_compose_services_depend_on_what_they_need(
    compose: dict[str, Any], stages: list[Stage]
) -> None:
    services: dict[str, Any] = compose["services"]
    assert set(services) == {"db", "migrate", "app"}
    db = services["db"]
    assert re.fullmatch(r"postgres:\d+", db["image"]), "PostgreSQL pinned to a major version"
    data = [v for v in db["volumes"] if v.endswith(":/var/lib/postgresql/data")]
    assert data, "PostgreSQL keeps its data on a volume"
    assert data[0].split(":")[0] in compose["volumes"], "a named volume"
    check = healthcheck_of(db, stages)
    assert check is not None
    assert check[0] == "pg_isready"
    assert option(check, "--username") == db["environment"]["POSTGRES_USER"]
    assert option(check, "--dbname") == db["environment"]["POSTGRES_DB"]

    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            assert rule["condition"] in SERVER_STATES, (name, target)
            if rule["condition"] == "service_healthy":
                assert healthcheck_of(services[target], stages), f"{target} has no health check"
            else:
                assert services[target].get("restart") == "no", f"{target} must be one-shot"

    app, migrate = services["app"], services["migrate"]
    assert app["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    for service in (app, migrate):
        assert service["build"] == "."
        assert (REPO_ROOT / "Dockerfile").exists()
    assert app["image"] == migrate["image"], "one image, built once"

    secrets_dir = Path(SECRETS_MOUNT)
    migrate_env = container_environment(migrate, stages, secrets_dir)
    migrate_args = parse_command(container_command(migrate, stages), migrate_env)
    assert migrate_args.command == "migrate"
    app_env = container_environment(app, stages, secrets_dir)
    app_args = parse_command(container_command(app, stages), app_env)
    assert app_args.command == "serve"
    published = [str(p) for p in app["ports"]]
    assert published == [f"8000:{app_args.port}"]
    assert str(app_args.port) == stages[-1].last("EXPOSE").arguments
    grace = int(str(app["stop_grace_period"]).removesuffix("s"))
    assert grace > 10, "longer than the service's own bounded shutdown"


def test_compose_secrets_and_environment_are_real(compose: dict[str, Any], tmp_path: Path) -> None:
    declared: dict[str, Any] = compose["secrets"]
    settings = setting_names()
    used: set[str] = set()
    for name, service in compose["services"].items():
        mounted = set(service.get("secrets") or [])
        assert mounted <= set(declared), f"{name} mounts an undeclared secret"
        used |= mounted
        env = service_environment(service, Path(SECRETS_MOUNT), {})
        for variable, value in env.items():
            if variable.endswith("_FILE"):
                secret = value.removeprefix(SECRETS_MOUNT)
                assert value.startswith(SECRETS_MOUNT), (name, variable)
                assert secret in mounted, (name, variable)
                assert "/" not in secret
            if "build" in service and variable not in SERVE_VARIABLES:
                # our image: every other variable is a setting
                base = variable.removesuffix("_FILE")
                assert base in settings, f"{name}: {variable} is not a setting"
                if variable.endswith("_FILE"):
                    assert base in FILE_BACKED, f"{base} cannot be read from a file"
        for secret_name in mounted:
            files = [v for v in env.values() if v == SECRETS_MOUNT + secret_name]
            assert files, f"{name} mounts {secret_name} but no *_FILE variable reads it"
    assert used == set(declared), "every declared secret is used"

    gitignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    for secret in declared.values():
        path = Path(secret["file"])
        assert path.parts[0] == "secrets", "secret files live in ./secrets/"
    assert "secrets/" in gitignored, "secret files are never committed"

    # The app's environment is one Settings accepts, with every secret read from its file.
    app = compose["services"]["app"]
    values = {
        "database_url": "postgresql://links:pw@db:5432/links",
        "secret_keys": secrets.token_urlsafe(48),
        "admin_token": secrets.token_urlsafe(24),
    }
    for name, value in values.items():
        (tmp_path / name).write_text(value + "\n")
    env = service_environment(app, tmp_path, {})
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in env.items():
            patch.setenv(variable, value)
        for variable in ("DATABASE_URL", "SECRET_KEYS", "ADMIN_TOKEN"):
            patch.delenv(variable, raising=False)
        configured = Settings()
    configured.check_serveable()
    assert configured.database_url == "postgresql+asyncpg://links:pw@db:5432/links"
    assert configured.signing_keys() == [values["secret_keys"].encode()]
    assert configured.admin_token is not None
    assert configured.public_base_url == "http://localhost:8000"


# --- the container's commands, run as processes --------------------------------------------


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database no migration has touched, as a fresh compose volume gives."""
    url = database.create_database(migrated=False)
    yield url
    database.drop_database(url)


def write_secrets(directory: Path, database_url: str) -> dict[str, str]:
    directory.mkdir()
    values = {
        "database_url": database_url.replace("postgresql+asyncpg://", "postgresql://", 1),
        "secret_keys": secrets.token_urlsafe(48),
        "admin_token": secrets.token_urlsafe(24),
        "postgres_password": secrets.token_urlsafe(16),
    }
    for name, value in values.items():
        (directory / name).write_text(value + "\n")
    return values


@pytest.mark.slow
def test_container_commands_with_the_compose_environment(
    compose: dict[str, Any], stages: list[Stage], empty_database: str, tmp_path: Path
) -> None:
    """Start the app as its container would, before `migrate` ran: it is alive
    (the image's health check passes) but not ready (503); run the `migrate`
    service's command (exit 0), and start the app again: it serves and is ready (200)."""
    secret_dir = tmp_path / "run-secrets"
    values = write_secrets(secret_dir, empty_database)
    services = compose["services"]
    port = free_port()
    app_env = container_environment(services["app"], stages, secret_dir)
    app_env.update(DATABASE_POOL_SIZE="2", PORT=str(port))
    command = local_command(container_command(services["app"], stages))
    healthcheck = local_healthcheck(image_healthcheck(stages))
    check_env = {**os.environ, **app_env}
    local_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    # Too early, the question is only alive-but-not-ready, which one process answers as
    # well as the image's two workers; the app started after `migrate` runs as the image does.
    early_env = {**app_env, "WEB_CONCURRENCY": "1"}
    with running_command(command, early_env, tmp_path, port) as too_early:
        alive = subprocess.run(healthcheck, env=check_env, capture_output=True, timeout=30)
        assert alive.returncode == 0, alive.stderr.decode()
        not_ready = httpx.get(f"{too_early.base_url}/readyz", timeout=10)
        assert not_ready.status_code == 503

    migrate_env = service_environment(services["migrate"], secret_dir, {})
    migrate = subprocess.run(
        local_command(container_command(services["migrate"], stages)),
        env={**local_env, **migrate_env},
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr.decode()

    with running_command(command, app_env, tmp_path, port) as app:
        check = subprocess.run(healthcheck, env=check_env, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode()
        ready = httpx.get(f"{app.base_url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "schema": schema_head()}
        admin = {"Authorization": f"Bearer {values['admin_token']}"}
        created = httpx.post(
            f"{app.base_url}/v1/admin/clients",
            json={"id": "first", "name": "First", "allowed_redirects": ["https://x.example/"]},
            headers=admin,
        )
        assert created.status_code == 201, "ADMIN_TOKEN_FILE was read"
        log = app.log()
    for value in values.values():
        assert value not in log
    lines = [json.loads(line) for line in log.splitlines()]
    # compose's default PUBLIC_BASE_URL (http://localhost:8000) is accepted with one warning.
    assert [line["msg"] for line in lines if line["level"] == "warning"] == [
        "PUBLIC_BASE_URL is http://localhost:8000: minted links only work on this machine; "
        "set PUBLIC_BASE_URL to the https:// address people reach"
    ]
    started = next(line for line in lines if line["msg"].startswith("starting on"))
    assert started["msg"].startswith("starting on http://127.0.0.1:")
    assert started["config"]["secret_keys"] == "1 key(s)"
    assert started["config"]["admin_api"] == "on"
    assert started["config"]["database_url"].endswith(empty_database.rsplit("@", 1)[1])
