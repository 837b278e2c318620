"""Resend after expiry (API.md, *Finishing the flow*): ``resend=`` and ``POST /v1/links/resend``.

In-process, on PostgreSQL and on SQLite alike.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import event

from service.resend import RESEND_MAX_AGE, replacement_request
from service.state import AppState
from service.tokens import LinkClaims, ResendClaims, TokenCodec
from tests.conftest import SHOP_ORIGIN, Tenant, make_tenant
from tests.support.database import POSTGRES, SQLITE

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

Headers = dict[str, str]
Json = dict[str, Any]


def expired_link(state: AppState, client_id: str = "shop", **fields: Any) -> LinkClaims:
    """A genuine link of ``client_id`` whose lifetime ended a minute ago."""
    now_us = time.time_ns() // 1000
    claims: dict[str, Any] = {
        "link_id": state.codec.mint_link_id(client_id),
        "client_id": client_id,
        "action": "activate",
        "subject": None,
        "data": None,
        "issued_at_us": now_us - 3_600_000_000,
        "expires_at": now_us // 1_000_000 - 60,
        "max_uses": 1,
    }
    claims.update(fields)
    return LinkClaims(**claims)


async def hint_of(http: httpx.AsyncClient, state: AppState, link: LinkClaims) -> str:
    """Follow the expired ``link``; the ``resend`` its failure redirect carries."""
    response = await http.get("/r/" + state.codec.sign_link(link))
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{SHOP_ORIGIN}/oops"
    assert (query["error"], query["link_id"]) == ("expired", link.link_id)
    return query["resend"]


async def resend(tenant: Tenant, hint: Any) -> httpx.Response:
    return await tenant.http.post("/v1/links/resend", json={"resend": hint}, headers=tenant.headers)


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_an_expired_link_buys_a_replacement_with_everything_it_carried(
    shop: Tenant, http: httpx.AsyncClient, state: AppState, admin_headers: Headers
) -> None:
    await shop.put_action("activate", admin_headers, ttl=600)
    old = expired_link(
        state,
        subject="42",
        data={"plan": "pro", "n": [1, 2]},
        once_key="welcome:42",
        max_uses=3,
        success_url=f"{SHOP_ORIGIN}/welcome/back",
        failure_url=f"{SHOP_ORIGIN}/oops",
        code=True,
    )
    hint = await hint_of(http, state, old)
    before = datetime.now(UTC).replace(microsecond=0)
    answered = await resend(shop, hint)
    assert answered.status_code == 201, answered.text
    new = answered.json()
    assert set(new) == {"id", "url", "token", "action", "subject", "expires_at", "max_uses", "code"}
    assert new["id"] != old.link_id
    assert (new["action"], new["subject"], new["max_uses"]) == ("activate", "42", 3)
    expires_at = datetime.fromisoformat(new["expires_at"])
    assert (
        before + timedelta(seconds=600) <= expires_at <= datetime.now(UTC) + timedelta(seconds=601)
    )
    claims = state.codec.verify_link(new["token"])
    assert (claims.data, claims.once_key, claims.success_url, claims.failure_url, claims.code) == (
        old.data,
        old.once_key,
        old.success_url,
        old.failure_url,
        True,
    )
    assert new["code"] == state.codec.typed_code(claims)
    followed = await http.get("/r/" + new["token"])
    assert followed.status_code == 303
    assert followed.headers["location"].startswith(f"{SHOP_ORIGIN}/welcome/back?link_id=")
    # A hint is no one-time thing: the caller may lose the first replacement's mail.
    assert (await resend(shop, hint)).status_code == 201


async def test_unlimited_stays_unlimited_and_supersede_is_not_carried(
    shop: Tenant, http: httpx.AsyncClient, state: AppState
) -> None:
    hint = await hint_of(http, state, expired_link(state, max_uses=None, subject="7"))
    new = (await resend(shop, hint)).json()
    assert new["max_uses"] is None  # not the action's default of 1
    assert "code" not in new


async def test_resending_writes_nothing(
    shop: Tenant, http: httpx.AsyncClient, state: AppState
) -> None:
    hint = await hint_of(http, state, expired_link(state, subject="42"))
    assert (await resend(shop, hint)).status_code == 201  # key and client cached from here on
    statements: list[str] = []
    requests = asyncio.current_task()

    def executed(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if asyncio.current_task() is requests:
            statements.append(statement)

    engine = state.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", executed)
    try:
        for _ in range(5):
            assert (await resend(shop, hint)).status_code == 201
    finally:
        event.remove(engine, "before_cursor_execute", executed)
    assert statements == []


async def test_a_hint_of_another_client_or_tampered_is_not_found(
    shop: Tenant, http: httpx.AsyncClient, state: AppState, admin_headers: Headers
) -> None:
    mall = await make_tenant(http, admin_headers, "mall")
    link = expired_link(state)
    hint = await hint_of(http, state, link)
    forged = TokenCodec([b"another-deployment-key-0123456789abcdef"]).sign_resend(
        ResendClaims(link, int(time.time()))
    )
    for bad in (
        hint[:-1] + ("A" if hint[-1] != "A" else "Q"),
        hint + "x",
        forged,
        state.codec.sign_link(link),  # the expired link's own token buys nothing
        "not a hint",
    ):
        problem(await resend(shop, bad), 404, "not_found")
    problem(await resend(mall, hint), 404, "not_found")
    assert (await resend(shop, hint)).status_code == 201


async def test_a_hint_is_good_for_seven_days(shop: Tenant, state: AppState) -> None:
    link = expired_link(state)
    now = int(time.time())
    week_old = state.codec.sign_resend(ResendClaims(link, now - RESEND_MAX_AGE + 5))
    assert (await resend(shop, week_old)).status_code == 201
    older = state.codec.sign_resend(ResendClaims(link, now - RESEND_MAX_AGE - 1))
    problem(await resend(shop, older), 410, "resend_expired")
    # The clock is injectable: the same hint, seen from eight days on.
    fresh = state.codec.sign_resend(ResendClaims(link, now))
    assert replacement_request(state.codec, "shop", fresh, datetime.now(UTC)).action == "activate"
    later = datetime.now(UTC) + timedelta(days=8)
    with pytest.raises(Exception, match="older than 7 days"):
        replacement_request(state.codec, "shop", fresh, later)


async def test_the_action_must_still_be_there_and_enabled(
    shop: Tenant, http: httpx.AsyncClient, state: AppState, admin_headers: Headers
) -> None:
    hint = await hint_of(http, state, expired_link(state))
    await shop.put_action("activate", admin_headers, enabled=False)
    problem(await resend(shop, hint), 422, "unknown_action")
    await shop.put_action("activate", admin_headers)
    assert (await resend(shop, hint)).status_code == 201
    gone = await http.delete("/v1/admin/clients/shop/actions/activate", headers=admin_headers)
    assert gone.status_code == 204
    problem(await resend(shop, hint), 422, "unknown_action")


@pytest.mark.parametrize(
    "body",
    [{}, {"resend": None}, {"resend": 5}, {"resend": ""}, {"resend": "a\u0000b"}, {"x": "y"}],
)
async def test_bad_bodies_are_validation_errors(shop: Tenant, body: Json) -> None:
    answered = await shop.http.post("/v1/links/resend", json=body, headers=shop.headers)
    problem(answered, 422, "validation_error")


async def test_no_failure_url_shows_the_expired_page_that_says_ask_for_a_new_link(
    shop: Tenant, http: httpx.AsyncClient, state: AppState, admin_headers: Headers
) -> None:
    await shop.put_action("activate", admin_headers, failure_url=None)
    response = await http.get("/r/" + state.codec.sign_link(expired_link(state)))
    assert response.status_code == 410
    assert "Ask the sender for a new link." in response.text
