"""ADMIN_TOKEN as a list (rotation without downtime) and METRICS_TOKEN for /metrics."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from service.api.bearer import matches_any
from service.config import ConfigurationError, Settings
from service.main import create_app
from tests.conftest import ADMIN_TOKEN, SECRET
from tests.support.logcheck import remember_secrets
from tests.support.processes import running_service
from tests.support.served import service_env

OLD_ADMIN = "old-admin-token-0123456789abcdef"
NEW_ADMIN = "new-admin-token-fedcba9876543210"
METRICS = "metrics-token-0123456789abcdefgh"
NEXT_METRICS = "next-metrics-token-0123456789abc"
remember_secrets(OLD_ADMIN, NEW_ADMIN, METRICS, NEXT_METRICS)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("ADMIN_TOKEN", "METRICS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    return monkeypatch


# --- configuration -----------------------------------------------------------------------


def test_both_take_lists_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("ADMIN_TOKEN", f" {OLD_ADMIN}, {NEW_ADMIN} ,")
    env.setenv("METRICS_TOKEN", METRICS)
    settings = Settings(secret_keys=SECRET)
    assert settings.admin_tokens() == [OLD_ADMIN, NEW_ADMIN]
    assert settings.metrics_tokens() == [METRICS]
    settings.check_serveable()
    masked = settings.masked()
    assert (masked["admin_api"], masked["admin_tokens"], masked["metrics"]) == ("on", 2, "token")
    for token in (OLD_ADMIN, NEW_ADMIN, METRICS):
        assert token not in str(masked)


def test_both_take_lists_from_files(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "admin").write_text(f"{OLD_ADMIN}\n{NEW_ADMIN}\n")
    (tmp_path / "metrics").write_text(f"{METRICS},{NEXT_METRICS}\n")
    env.setenv("ADMIN_TOKEN_FILE", str(tmp_path / "admin"))
    env.setenv("METRICS_TOKEN_FILE", str(tmp_path / "metrics"))
    settings = Settings()
    assert settings.admin_tokens() == [OLD_ADMIN, NEW_ADMIN]
    assert settings.metrics_tokens() == [METRICS, NEXT_METRICS]


def test_unset_or_empty_means_none(env: pytest.MonkeyPatch) -> None:
    assert Settings().admin_tokens() == []
    assert Settings().metrics_tokens() == []
    env.setenv("ADMIN_TOKEN", " , ")
    assert Settings().admin_tokens() == []


@pytest.mark.parametrize("variable", ["ADMIN_TOKEN", "METRICS_TOKEN"])
@pytest.mark.parametrize("weak", ["changeme", "short"])
def test_every_listed_token_must_be_strong(
    env: pytest.MonkeyPatch, variable: str, weak: str
) -> None:
    env.setenv(variable, f"{OLD_ADMIN},{weak}")
    with pytest.raises(ConfigurationError, match=variable):
        Settings(secret_keys=SECRET).check_serveable()


# --- comparison --------------------------------------------------------------------------


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@pytest.mark.parametrize("presented", [OLD_ADMIN, NEW_ADMIN, "wrong", "", None])
def test_every_token_is_compared_whatever_matches(
    compare_digest_calls: list[tuple[Any, Any]], presented: str | None
) -> None:
    """No early exit, and digests of one length: timing tells nothing about the tokens."""
    configured = [OLD_ADMIN, NEW_ADMIN]
    assert matches_any(presented, configured) is (presented in configured)
    expected = [(digest(presented or ""), digest(token)) for token in configured]
    assert compare_digest_calls == expected


# --- the routes --------------------------------------------------------------------------


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "admin_token": SecretStr(f"{OLD_ADMIN},{NEW_ADMIN}"),
            "metrics_token": SecretStr(METRICS),
        }
    )
    app = create_app(configured)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_every_listed_admin_token_is_accepted(http: httpx.AsyncClient) -> None:
    for token in (OLD_ADMIN, NEW_ADMIN):
        assert (await http.get("/v1/admin/clients", headers=bearer(token))).status_code == 200
    for headers in (bearer(ADMIN_TOKEN), bearer(f"{OLD_ADMIN},{NEW_ADMIN}"), {}):
        refused = await http.get("/v1/admin/clients", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers", [{}, bearer("wrong"), bearer(OLD_ADMIN), {"Authorization": METRICS}]
)
async def test_metrics_want_the_metrics_token_when_one_is_set(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    refused = await http.get("/metrics", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["code"] == "unauthorized"
    scraped = await http.get("/metrics", headers=bearer(METRICS))
    assert scraped.status_code == 200
    assert 'action_links_auth_failures_total{credential="metrics_token"}' in scraped.text


async def test_metrics_are_open_without_a_metrics_token(settings: Settings) -> None:
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/metrics")).status_code == 200
            assert (await http.get("/metrics", headers=bearer("anything"))).status_code == 200


# --- a real process ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_process_takes_both_from_files_and_never_logs_them(
    database_url: str, tmp_path: Path
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "admin").write_text(f"{OLD_ADMIN}\n{NEW_ADMIN}\n")
    (secrets_dir / "metrics").write_text(METRICS)
    env = service_env(database_url, 2)
    del env["ADMIN_TOKEN"]
    env |= {
        "ADMIN_TOKEN_FILE": str(secrets_dir / "admin"),
        "METRICS_TOKEN_FILE": str(secrets_dir / "metrics"),
    }
    with (
        running_service(env, tmp_path) as service,
        httpx.Client(base_url=service.base_url, timeout=10) as http,
    ):
        for token in (OLD_ADMIN, NEW_ADMIN):
            assert http.get("/v1/admin/clients", headers=bearer(token)).status_code == 200
        assert http.get("/v1/admin/clients", headers=bearer(METRICS)).status_code == 401
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers=bearer(NEW_ADMIN)).status_code == 401
        assert http.get("/metrics", headers=bearer(METRICS)).status_code == 200
        log = service.log()
    assert "/metrics" in log  # the refusals were logged, at debug level and above
    for token in (OLD_ADMIN, NEW_ADMIN, METRICS):
        assert token not in log
