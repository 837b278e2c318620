"""One in-process app per module (and backend), a fresh client per test.

For modules of many small in-process tests, where building the app and
emptying the database would cost more than the test: the module imports these
fixtures (they replace the conftest's per-test ``database_url``, ``settings``,
``app``, ``state``, ``http`` and ``shop``) and runs its async tests on the
module's event loop, where the app runs::

    backend, database_url, settings, app, state, http, shop = FIXTURES
    ...
    on_the_modules_loop(globals())  # at the end of the module

Each
test gets a client of its own (``shop`` has a new id each time), so no test
sees another's links, keys or actions; tests that read the database filter by
their own client or link.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from service.config import Settings
from service.main import create_app
from service.state import AppState
from tests.conftest import ADMIN_TOKEN, PUBLIC_BASE_URL, SECRET, Tenant, make_tenant
from tests.support import database

_ids = itertools.count(1)


def new_client_id(prefix: str = "shop") -> str:
    """A client id no other test of the session uses."""
    return f"{prefix}-{next(_ids)}"


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """The database of the module's app: PostgreSQL unless marked ``backends``."""
    chosen: str = getattr(request, "param", database.POSTGRES)
    return chosen


@pytest.fixture(scope="module")
def database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A migrated database of the backend, emptied once for the module."""
    if backend == database.SQLITE:
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path_factory.mktemp("sqlite") / "links.db"
        return database.copy_sqlite_database(template, path)
    postgres_url: str = request.getfixturevalue("postgres_url")
    database.truncate_all(postgres_url)
    return postgres_url


def app_settings(database_url: str, **overrides: object) -> Settings:
    """The conftest's settings (and ``overrides``), for a module's own ``settings``."""
    return Settings(
        database_url=database_url,
        secret_keys=SECRET,
        admin_token=ADMIN_TOKEN,
        public_base_url=PUBLIC_BASE_URL,
    ).model_copy(update=overrides)


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return app_settings(database_url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="module")
def state(app: FastAPI) -> AppState:
    services: AppState = app.state.services
    return services


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def shop(http: httpx.AsyncClient, admin_headers: dict[str, str]) -> Tenant:
    """A new client (``shop-<n>``) with action ``activate``, as the conftest's ``shop``."""
    return await make_tenant(http, admin_headers, new_client_id())


FIXTURES = (backend, database_url, settings, app, state, http, shop)


def on_the_modules_loop(namespace: dict[str, Any]) -> None:
    """Mark the async tests of a module to run on the module's event loop (the sync
    ones may not carry the mark)."""
    for name, value in namespace.items():
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            namespace[name] = pytest.mark.asyncio(loop_scope="module")(value)
