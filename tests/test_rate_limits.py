"""Abuse limits (API.md, "Abuse limits"), in-process: 429 at the configured count, per
client address, counted in the database on failures only, and never a 500 or 503.

Each test's app allows ``LIMIT`` failures a minute; requests come from chosen
client addresses (the ASGI transport's peer). Two apps on one database stand
for two service processes; ``tests/test_rate_limits_processes.py`` runs real ones.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import make_url

from service.config import Settings
from service.main import create_app
from service.rate_limits import BlockedAddresses, Limited
from tests.conftest import Tenant, link_path, make_tenant
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.links import outcome_of
from tests.support.processes import free_port

LIMIT = 5
ATTACKER, NEIGHBOUR = "198.51.100.7", "198.51.100.8"
WRONG_KEY = {"Authorization": "Bearer alk_" + "x" * 43}
FORGED = "/r/" + "A" * 60 + ".forged"
PROBLEM_JSON = "application/problem+json"

Headers = dict[str, str]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest's settings with small failure limits."""
    return settings.model_copy(
        update={
            "rate_limit_auth_failures": f"{LIMIT}/minute",
            "rate_limit_link_failures": f"{LIMIT}/minute",
        }
    )


@asynccontextmanager
async def client_at(app: FastAPI, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose requests come from ``address``."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with LifespanManager(app):
        yield app


async def counters(database_url: str) -> dict[tuple[str, str], int]:
    rows = await fetch(database_url, "SELECT scope, address, failures FROM failure_counters")
    return {(r["scope"], r["address"]): r["failures"] for r in rows}


def assert_rate_limited_problem(response: httpx.Response, window: int = 60) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= window


def assert_rate_limited_page(response: httpx.Response, body: bool = True) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-robots-tag"] == "noindex, nofollow"
    assert "content-security-policy" in response.headers
    assert response.headers["content-type"].startswith("text/html")
    if body:
        assert "Too many attempts" in response.text


# --- authentication ------------------------------------------------------------------------


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_wrong_api_keys_get_429_at_the_limit_then_so_does_every_key(
    app: FastAPI, shop: Tenant, database_url: str
) -> None:
    async with client_at(app, ATTACKER) as attacker, client_at(app, NEIGHBOUR) as neighbour:
        for _ in range(LIMIT):
            response = await attacker.get("/v1/redemptions", headers=WRONG_KEY)
            assert response.status_code == 401
        refused = await attacker.get("/v1/redemptions", headers=WRONG_KEY)
        assert_rate_limited_problem(refused)
        # Guessing right no longer helps from this address...
        assert_rate_limited_problem(await attacker.get("/v1/redemptions", headers=shop.headers))
        # ...and the flood wrote nothing more than the limit's count.
        assert await counters(database_url) == {("auth", ATTACKER): LIMIT}
        # Another address is not affected, with the right key or a wrong one.
        assert (await neighbour.get("/v1/redemptions", headers=shop.headers)).status_code == 200
        assert (await neighbour.get("/v1/redemptions", headers=WRONG_KEY)).status_code == 401
        metrics = (await neighbour.get("/metrics")).text
        assert re.search(r'action_links_rate_limited_total\{limit="auth"\} [1-9]', metrics)


async def test_wrong_admin_tokens_count_with_wrong_api_keys_and_missing_ones_do_not(
    app: FastAPI, admin_headers: Headers
) -> None:
    wrong_admin = {"Authorization": "Bearer not-the-admin-token-at-all"}
    async with client_at(app, ATTACKER) as attacker:
        for _ in range(2 * LIMIT):  # a missing credential guesses nothing: not counted
            assert (await attacker.get("/v1/admin/clients")).status_code == 401
            assert (await attacker.get("/v1/redemptions")).status_code == 401
        for _ in range(LIMIT - 2):
            assert (await attacker.get("/v1/admin/clients", headers=wrong_admin)).status_code == 401
        for _ in range(2):
            assert (await attacker.get("/v1/redemptions", headers=WRONG_KEY)).status_code == 401
        assert_rate_limited_problem(await attacker.get("/v1/admin/clients", headers=wrong_admin))
        assert_rate_limited_problem(await attacker.get("/v1/admin/clients", headers=admin_headers))
    async with client_at(app, NEIGHBOUR) as neighbour:
        assert (await neighbour.get("/v1/admin/clients", headers=admin_headers)).status_code == 200


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_a_second_process_learns_the_limit_from_the_database(
    settings: Settings, database_url: str
) -> None:
    async with serving(settings) as first, serving(settings) as second:
        async with client_at(first, ATTACKER) as one, client_at(second, ATTACKER) as two:
            for _ in range(LIMIT):
                assert (await one.get("/v1/redemptions", headers=WRONG_KEY)).status_code == 401
            # The second process has seen nothing of it: its first failure asks the database.
            assert_rate_limited_problem(await two.get("/v1/redemptions", headers=WRONG_KEY))
            assert_rate_limited_problem(await two.get("/v1/redemptions", headers=WRONG_KEY))
    assert await counters(database_url) == {("auth", ATTACKER): LIMIT + 1}


async def test_the_window_ends_and_failures_are_answered_as_before(
    settings: Settings,
) -> None:
    quick = settings.model_copy(update={"rate_limit_auth_failures": "2/second"})
    async with serving(quick) as app, client_at(app, ATTACKER) as attacker:
        for _ in range(2):
            assert (await attacker.get("/v1/redemptions", headers=WRONG_KEY)).status_code == 401
        assert_rate_limited_problem(
            await attacker.get("/v1/redemptions", headers=WRONG_KEY), window=1
        )
        await asyncio.sleep(1.1)
        assert (await attacker.get("/v1/redemptions", headers=WRONG_KEY)).status_code == 401


async def test_off_never_refuses_and_writes_nothing(settings: Settings, database_url: str) -> None:
    off = settings.model_copy(
        update={"rate_limit_auth_failures": None, "rate_limit_link_failures": None}
    )
    async with serving(off) as app, client_at(app, ATTACKER) as attacker:
        for _ in range(3 * LIMIT):
            assert (await attacker.get("/v1/redemptions", headers=WRONG_KEY)).status_code == 401
            assert (await attacker.get(FORGED)).status_code == 400
    assert await counters(database_url) == {}


# --- links ---------------------------------------------------------------------------------


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_forged_tokens_get_the_429_page_and_valid_links_still_work(
    app: FastAPI, shop: Tenant, database_url: str
) -> None:
    link = await shop.mint()
    async with client_at(app, ATTACKER) as attacker, client_at(app, NEIGHBOUR) as neighbour:
        tries = [attacker.get, attacker.head, attacker.post, attacker.get, attacker.get]
        for method in tries[:LIMIT]:
            assert (await method(FORGED)).status_code == 400
        assert_rate_limited_page(await attacker.get(FORGED))
        assert_rate_limited_page(await attacker.head(FORGED), body=False)
        assert_rate_limited_page(await attacker.post(FORGED))
        # Nothing can be guessed through a signature: a real link still works from there.
        assert outcome_of(await attacker.get(link_path(link))) == "success"
        assert (await neighbour.get(FORGED)).status_code == 400
    assert await counters(database_url) == {("link", ATTACKER): LIMIT, ("link", NEIGHBOUR): 1}


async def test_forged_one_click_posts_count_too(app: FastAPI) -> None:
    """A mail provider's RFC 8058 body is no way around the limit."""
    one_click = {"Content-Type": "application/x-www-form-urlencoded"}
    body = "List-Unsubscribe=One-Click"
    async with client_at(app, ATTACKER) as attacker:
        for _ in range(LIMIT):
            assert (await attacker.post(FORGED, content=body, headers=one_click)).status_code == 400
        assert_rate_limited_page(await attacker.post(FORGED, content=body, headers=one_click))


async def test_the_429_page_is_in_the_persons_language(app: FastAPI) -> None:
    async with client_at(app, ATTACKER) as attacker:
        for _ in range(LIMIT + 1):
            response = await attacker.get(FORGED, headers={"Accept-Language": "de"})
    assert response.status_code == 429
    assert response.headers["content-language"] == "de"
    assert "Too many attempts" not in response.text


# --- where the database cannot count ---------------------------------------------------------


async def test_a_failure_the_database_cannot_count_is_answered_as_usual(
    settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Never a 500, and never a 503 for a forged token or a wrong admin token: with the
    database unreachable (nothing listens at its port), each is answered as without limits."""
    gone = make_url(database_url).set(host="127.0.0.1", port=free_port())
    unreachable = settings.model_copy(
        update={"database_url": gone.render_as_string(hide_password=False)}
    )
    wrong_admin = {"Authorization": "Bearer not-the-admin-token-at-all"}
    malformed_key = {"Authorization": "Bearer not-even-an-api-key"}
    async with serving(unreachable) as app, client_at(app, ATTACKER) as attacker:
        for _ in range(2 * LIMIT):
            assert (await attacker.get(FORGED)).status_code == 400
            assert (await attacker.head(FORGED)).status_code == 400
            assert (await attacker.post(FORGED)).status_code == 400
            assert (await attacker.get("/v1/admin/clients", headers=wrong_admin)).status_code == 401
            assert (await attacker.get("/v1/redemptions", headers=malformed_key)).status_code == 401
    # Each failure was offered to the database; a flood of them warns once, not per request.
    assert caplog.text.count("failed attempts go uncounted: database unavailable") == 1


# --- mints -----------------------------------------------------------------------------------


async def test_mints_per_api_key_are_limited_in_process_when_configured(
    settings: Settings, admin_headers: Headers
) -> None:
    limited = settings.model_copy(update={"rate_limit_mints": "5/minute"})
    async with serving(limited) as app, client_at(app, ATTACKER) as http:
        shop = await make_tenant(http, admin_headers, "shop")
        other = await http.post("/v1/admin/clients/shop/keys", headers=admin_headers)
        other_key = {"Authorization": f"Bearer {other.json()['key']}"}
        batch = {"links": [{"action": "activate"}] * 3}
        assert (
            await http.post("/v1/links/batch", json=batch, headers=shop.headers)
        ).status_code == 201
        # A batch that does not fit is refused whole, and counts nothing.
        assert_rate_limited_problem(
            await http.post("/v1/links/batch", json=batch, headers=shop.headers)
        )
        await shop.mint()
        await shop.mint()
        assert_rate_limited_problem(
            await http.post("/v1/links", json={"action": "activate"}, headers=shop.headers)
        )
        # Per key: the client's other key mints on.
        minted = await http.post("/v1/links/batch", json=batch, headers=other_key)
        assert minted.status_code == 201


async def test_mints_are_not_limited_by_default(app: FastAPI, shop: Tenant) -> None:
    batch = {"links": [{"action": "activate"}] * 1000}
    for _ in range(3):
        minted = await shop.http.post("/v1/links/batch", json=batch, headers=shop.headers)
        assert minted.status_code == 201


# --- genuine traffic -------------------------------------------------------------------------


async def test_genuine_traffic_writes_no_counter(
    app: FastAPI, shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    for _ in range(3 * LIMIT):
        link = await shop.mint()
        assert outcome_of(await http.get(link_path(link))) == "success"
        assert outcome_of(await http.get(link_path(link))) == "used"
        assert (await http.get("/v1/admin/clients", headers=admin_headers)).status_code == 200
    assert await counters(database_url) == {}


def test_the_blocked_addresses_a_process_remembers_are_bounded() -> None:
    blocked = BlockedAddresses(capacity=3)
    for n in range(5):
        blocked.block(Limited.AUTH, f"192.0.2.{n}", 60)
    assert len(blocked) == 3
    assert blocked.wait(Limited.AUTH, "192.0.2.0") is None  # the oldest were forgotten
    assert blocked.wait(Limited.AUTH, "192.0.2.4") == 60
    assert blocked.wait(Limited.LINK, "192.0.2.4") is None
    blocked.block(Limited.LINK, "192.0.2.9", -1)  # a window already over
    assert blocked.wait(Limited.LINK, "192.0.2.9") is None
