"""/readyz: ready only when the database answers and its schema is the newest migration.

On PostgreSQL only: the tests need a database created without its schema, and
a TCP proxy to cut; SQLite has neither (a missing file is created empty).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.config import Settings
from service.db import migrate, schema_head
from service.main import create_app
from tests.conftest import SECRET
from tests.support import database
from tests.support.proxy import TcpProxy


@pytest.fixture
def fresh_database() -> Iterator[str]:
    url = database.create_database(migrated=False)
    yield url
    database.drop_database(url)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    tcp = TcpProxy().start()
    yield tcp
    tcp.close()


async def serve(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, secret_keys=SECRET, database_pool_size=2)
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def readiness(http: httpx.AsyncClient) -> tuple[int, dict[str, str]]:
    response = await http.get("/readyz")
    assert response.headers["cache-control"] == "no-store"
    return response.status_code, response.json()


async def test_not_ready_before_migrate_ready_after(fresh_database: str) -> None:
    head = schema_head()
    async for http in serve(fresh_database):
        assert (await http.get("/healthz")).status_code == 200
        assert await readiness(http) == (
            503,
            {"status": "unavailable", "reason": f"schema not migrated: at none, need {head}"},
        )
        # alembic runs its own event loop: off this one, as `action-links migrate` would.
        await asyncio.to_thread(migrate, Settings(database_url=fresh_database))
        assert await readiness(http) == (200, {"status": "ready", "schema": head})
        await database.fetch(fresh_database, "UPDATE alembic_version SET version_num = 'old1'")
        assert await readiness(http) == (
            503,
            {"status": "unavailable", "reason": f"schema not migrated: at old1, need {head}"},
        )


async def test_not_ready_while_the_database_is_unreachable(
    postgres_url: str, proxy: TcpProxy
) -> None:
    async for http in serve(proxy.url_for(postgres_url)):
        assert (await readiness(http))[0] == 200
        proxy.cut()
        status, body = await readiness(http)
        assert (status, body) == (503, {"status": "unavailable", "reason": "database unreachable"})
        assert (await http.get("/healthz")).status_code == 200, "alive, just not ready"
        proxy.restore()
        deadline = time.monotonic() + 20
        while (await readiness(http))[0] != 200:  # pooled connections died with the cut
            assert time.monotonic() < deadline, "ready again once the database is back"
