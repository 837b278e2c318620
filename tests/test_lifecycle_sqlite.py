"""The lifecycle on the embedded default (SQLite): its own SQL paths (upserts, rowid batches)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.config import Settings
from service.db import migrate
from service.main import create_app
from service.purge import CLOCK_SKEW_GRACE, purge
from service.state import AppState
from tests.conftest import ADMIN_TOKEN, PUBLIC_BASE_URL, SECRET, Tenant, make_tenant
from tests.support.links import redeem


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Migrated outside the event loop: alembic runs its own."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'links.db'}",
        secret_keys=SECRET,
        admin_token=ADMIN_TOKEN,
        public_base_url=PUBLIC_BASE_URL,
    )
    migrate(settings)
    return settings


@pytest.fixture
async def sqlite_shop(sqlite_settings: Settings) -> AsyncIterator[tuple[Tenant, AppState]]:
    app = create_app(sqlite_settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            shop = await make_tenant(http, admin, "shop")
            await shop.put_action("forever", admin, max_uses=None)
            yield shop, app.state.services


async def test_lifecycle_on_sqlite(sqlite_shop: tuple[Tenant, AppState]) -> None:
    shop, state = sqlite_shop
    http = shop.http
    link = await shop.mint("forever", subject="42", expires_in=60)
    for _ in range(3):
        assert await redeem(http, link) == "success"
    status = (await http.get(f"/v1/links/{link['id']}", headers=shop.headers)).json()
    assert (status["uses"], status["revoked"]) == (3, False)
    assert status["first_redeemed_at"] < status["last_redeemed_at"]

    first = await http.post("/v1/revocations", json={"subject": "7"}, headers=shop.headers)
    second = await http.post("/v1/revocations", json={"subject": "7"}, headers=shop.headers)
    assert first.status_code == second.status_code == 201
    assert second.json()["revoked_at"] > first.json()["revoked_at"]
    spared = await shop.mint(subject="7")
    assert await redeem(http, spared) == "success"
    used = (
        await http.post("/v1/links/inspect", json={"token": spared["token"]}, headers=shop.headers)
    ).json()
    assert (used["valid"], used["reason"], used["link"]["uses"]) == (False, "used", 1)

    for _ in range(2):
        assert (
            await http.delete(f"/v1/links/{link['id']}", headers=shop.headers)
        ).status_code == 204
    assert await redeem(http, link) == "revoked"
    inspected = (
        await http.post("/v1/links/inspect", json={"token": link["token"]}, headers=shop.headers)
    ).json()
    assert (inspected["reason"], inspected["link"]["uses"]) == ("revoked", 3)

    page = (await http.get("/v1/redemptions", params={"limit": 2}, headers=shop.headers)).json()
    rest = (
        await http.get(
            "/v1/redemptions",
            params={"limit": 2, "cursor": page["next_cursor"]},
            headers=shop.headers,
        )
    ).json()
    assert [i["use"] for i in page["items"] + rest["items"]] == [1, 3, 2, 1]  # newest first
    assert rest["next_cursor"] is None

    report = await purge(
        state.store,
        datetime.now(UTC) + timedelta(days=366) + CLOCK_SKEW_GRACE,
        timedelta(days=90),
        batch_size=1,
    )
    assert (report.claims, report.revocations, report.subject_revocations) == (2, 1, 1)
    assert (report.redemptions, report.largest_batch) == (4, 1)
