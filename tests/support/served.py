"""A service as tests use it: a process's environment, a client made over HTTP, or an
app with its lifespan in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager

from service.config import Settings
from service.main import create_app
from tests.conftest import ADMIN_TOKEN, SECRET, SHOP_ORIGIN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def service_env(database_url: str, pool_size: int, **extra: str) -> dict[str, str]:
    """What ``action-links serve`` needs to run against the test database."""
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEYS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_POOL_SIZE": str(pool_size),
        **extra,
    }


async def provision_shop(
    http: httpx.AsyncClient, client_id: str = "shop", **action: object
) -> dict[str, str]:
    """Client ``shop`` (or ``client_id``) with action ``go`` (and the ``action``
    settings given) and a new API key; its request headers."""
    body = {"id": client_id, "name": "Shop", "allowed_redirects": [f"{SHOP_ORIGIN}/"]}
    assert (await http.post("/v1/admin/clients", json=body, headers=ADMIN)).status_code == 201
    settings = {"success_url": f"{SHOP_ORIGIN}/ok", "failure_url": f"{SHOP_ORIGIN}/no", **action}
    put = await http.put(f"/v1/admin/clients/{client_id}/actions/go", json=settings, headers=ADMIN)
    assert put.status_code == 200
    key = (await http.post(f"/v1/admin/clients/{client_id}/keys", headers=ADMIN)).json()["key"]
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with these settings, in-process, with its lifespan (and dispatcher) running."""
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
