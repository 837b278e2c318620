"""Fixtures: a migrated database per session, an empty one per test, the app in-process.

The database is PostgreSQL; a test or module marked
``@pytest.mark.backends("postgres", "sqlite")`` runs once on each (SQLite in a
file of the test's own, migrated like PostgreSQL).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from service.config import Settings
from service.main import create_app
from service.state import AppState
from tests.support import database
from tests.support.logcheck import remember_secrets, service_logs_hold_no_secrets  # noqa: F401

SECRET = "test-signing-key-0123456789abcdefghijklmnopqrstuvwxyz"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
PUBLIC_BASE_URL = "https://links.example.com"
SHOP_ORIGIN = "https://shop.example"
remember_secrets(SECRET, ADMIN_TOKEN)
CLIENT_SUITE = "clients/python/tests/"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if not database.postgres_available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not reachable, and CI must not skip its tests")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    url = database.create_database()
    yield url
    database.drop_database(url)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for ``pytest -n 3 --dist loadgroup`` (.ci/run): a module's tests stay on
    one worker (its module-scoped processes start once), and the ``heavy`` runs (several
    service processes with full pools each) share one worker, so that the workers
    never run two of them at once: together they would outgrow PostgreSQL's 100
    connections and the 2 cores' share each run was sized for.

    The longest groups come first (the heavy runs, then the modules marked ``slow``,
    which start processes or a browser; ``.ci/run`` passes ``--no-loadscope-reorder``
    so that xdist keeps this order): the short modules then fill the workers' ends
    evenly, instead of one long module starting last while the others idle.

    The Python client's suite is one group: its tests share one service process
    (session-scoped, ``clients/python/tests/conftest.py``), started once, not on each
    worker."""

    def length_rank(item: pytest.Item) -> int:
        if item.get_closest_marker("heavy"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    grouping = bool(getattr(config.option, "loadgroup", False))  # set on xdist's workers
    for item in items:
        group = "heavy" if item.get_closest_marker("heavy") else item.nodeid.split("::")[0]
        if group.startswith(CLIENT_SUITE):
            group = CLIENT_SUITE
        item.add_marker(pytest.mark.xdist_group(group))
        if grouping:
            join_xdist_group(item, group)
    items.sort(key=length_rank)


def join_xdist_group(item: pytest.Item, group: str) -> None:
    """What the scheduler of ``--dist loadgroup`` groups by: ``@group`` at the end of the id.

    xdist 3.8 writes it from the ``xdist_group`` mark to ``item._nodeid``, which pytest 9.2
    no longer reads (an item's id is ``item._id``, a ``NodeId``): every test was scheduled
    on its own, each slow module's processes and browser started on both workers, and the
    heavy runs overlapped. So it is written here, where pytest reads it.
    """
    if item.nodeid.endswith(f"@{group}"):
        return  # an xdist (or a pytest) where its own hook took effect
    from _pytest.nodeid import NodeId  # pytest 9.2's; the lock pins it

    item._id = NodeId.parse(f"{item.nodeid}@{group}")
    if not item.nodeid.endswith(f"@{group}"):  # a pytest where neither works: say so, loudly
        raise pytest.UsageError(f"--dist loadgroup: could not put {item.nodeid} in its group")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.backends("postgres", "sqlite")`` runs a test (or module) on each."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", marker.args, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database a test runs on: PostgreSQL unless marked ``backends`` (see above)."""
    chosen: str = getattr(request, "param", database.POSTGRES)
    return chosen


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated with alembic once per session, copied for each test."""
    return database.create_sqlite_database(tmp_path_factory.mktemp("sqlite") / "template.db")


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of the test's backend: every test starts from nothing."""
    if backend == database.SQLITE:
        template: Path = request.getfixturevalue("sqlite_template")
        return database.copy_sqlite_database(template, tmp_path / "links.db")
    postgres_url: str = request.getfixturevalue("postgres_url")
    database.truncate_all(postgres_url)
    return postgres_url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_keys=SECRET,
        admin_token=ADMIN_TOKEN,
        public_base_url=PUBLIC_BASE_URL,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def state(app: FastAPI) -> AppState:
    services: AppState = app.state.services
    return services


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def compare_digest_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every call of ``hmac.compare_digest`` (the standard library's, still doing the work)."""
    calls: list[tuple[Any, Any]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Tenant:
    """A client with one API key, as its backend sees the service."""

    http: httpx.AsyncClient
    id: str
    key: str
    webhook_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def put_action(self, name: str, admin: dict[str, str], **fields: Any) -> None:
        body = {
            "success_url": f"{SHOP_ORIGIN}/welcome",
            "failure_url": f"{SHOP_ORIGIN}/oops",
            **fields,
        }
        response = await self.http.put(
            f"/v1/admin/clients/{self.id}/actions/{name}", json=body, headers=admin
        )
        assert response.status_code == 200, response.text

    async def mint(self, action: str = "activate", **fields: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/v1/links", json={"action": action, **fields}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        link: dict[str, Any] = response.json()
        return link


async def make_tenant(
    http: httpx.AsyncClient, admin: dict[str, str], client_id: str, **fields: Any
) -> Tenant:
    body = {"id": client_id, "name": f"{client_id} inc.", "allowed_redirects": [f"{SHOP_ORIGIN}/"]}
    body.update(fields)
    created = await http.post("/v1/admin/clients", json=body, headers=admin)
    assert created.status_code == 201, created.text
    key = await http.post(f"/v1/admin/clients/{client_id}/keys", headers=admin)
    assert key.status_code == 201, key.text
    tenant = Tenant(http, client_id, key.json()["key"], created.json()["webhook_secret"])
    await tenant.put_action("activate", admin)
    return tenant


@pytest.fixture
async def shop(http: httpx.AsyncClient, admin_headers: dict[str, str]) -> Tenant:
    """Client ``shop`` with action ``activate`` (single use, success and failure URLs)."""
    return await make_tenant(http, admin_headers, "shop")


def link_path(link: dict[str, Any]) -> str:
    """The path part of a minted URL, to request it from the in-process app."""
    return "/r/" + str(link["token"])
