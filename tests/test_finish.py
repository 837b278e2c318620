"""Finishing the flow in the caller's app (API.md): exchange codes, typed codes, supersede.

In-process, on PostgreSQL and on SQLite alike. The races across real service
processes are in ``test_finish_processes.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import event

from service.config import Settings
from service.purge import purge
from service.state import AppState
from service.tokens import ExchangeClaims, LinkClaims, TokenCodec
from tests.conftest import Tenant, link_path, make_tenant
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.receiver import Answer, Receiver

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

Headers = dict[str, str]
Json = dict[str, Any]


def query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 303, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


async def follow(http: httpx.AsyncClient, link: Json) -> dict[str, str]:
    """Follow a minted link; the query of the redirect it answered."""
    return query(await http.get(link_path(link)))


async def exchange(tenant: Tenant, code: Any) -> httpx.Response:
    return await tenant.http.post(
        "/v1/redemptions/exchange", json={"code": code}, headers=tenant.headers
    )


async def redeem_code(tenant: Tenant, token: Any, code: Any) -> httpx.Response:
    return await tenant.http.post(
        "/v1/links/redeem", json={"token": token, "code": code}, headers=tenant.headers
    )


def problem(response: httpx.Response, status: int, code: str) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: Json = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


def wrong(code: str) -> str:
    """Another 6-digit code."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- the exchange ----------------------------------------------------------------------


async def test_a_success_carries_a_code_the_backend_exchanges_once(
    shop: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    link = await shop.mint(subject="42", data={"plan": "pro"}, once_key="welcome:42")
    landed = await follow(http, link)
    assert set(landed) == {"link_id", "redemption_id", "code"}
    before = datetime.now(UTC)
    first = await exchange(shop, landed["code"])
    assert first.status_code == 200, first.text
    redemption = first.json()
    assert redemption["id"] == landed["redemption_id"]
    assert (redemption["link_id"], redemption["subject"], redemption["data"]) == (
        link["id"],
        "42",
        {"plan": "pro"},
    )
    assert (redemption["via"], redemption["once_key"]) == ("link", "welcome:42")
    exchanged_at = datetime.fromisoformat(redemption["exchanged_at"])
    assert before - timedelta(seconds=1) <= exchanged_at <= datetime.now(UTC)
    # The audit log shows the same object.
    listed = await http.get(f"/v1/redemptions/{redemption['id']}", headers=shop.headers)
    assert listed.json() == redemption

    body = problem(await exchange(shop, landed["code"]), 409, "code_used")
    assert "exchanged already" in body["detail"]
    rows = await fetch(database_url, "SELECT exchanged_at FROM redemptions")
    assert len(rows) == 1


async def test_a_code_older_than_300_seconds_is_expired(
    shop: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    landed = await follow(http, await shop.mint())
    # The redemption happened 301 s ago, as far as the database knows.
    old = datetime.now(UTC) - timedelta(seconds=301)
    rows = await fetch(database_url, "SELECT redeemed_at FROM redemptions")
    assert len(rows) == 1
    await fetch(
        database_url,
        "UPDATE redemptions SET redeemed_at = $1",
        old if database_url.startswith("postgresql") else old.strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    problem(await exchange(shop, landed["code"]), 410, "code_expired")
    problem(await exchange(shop, landed["code"]), 410, "code_expired")  # and stays so


async def test_anything_but_a_code_of_this_client_is_not_found(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, state: AppState
) -> None:
    mall = await make_tenant(http, admin_headers, "mall")
    link = await shop.mint()
    landed = await follow(http, link)
    code = landed["code"]
    forged = TokenCodec([b"another-deployment-key-0123456789abcdef"]).sign_exchange(
        ExchangeClaims("shop", landed["redemption_id"], int(time.time()))
    )
    unknown = state.codec.sign_exchange(ExchangeClaims("shop", "no-such", int(time.time())))
    for bad in (
        link["token"],  # a link token
        code[:-1] + ("A" if code[-1] != "A" else "Q"),  # tampered
        code + "x",
        forged,  # signed with another key
        unknown,  # genuine, for a redemption that does not exist
        landed["redemption_id"],
        "not a code",
    ):
        problem(await exchange(shop, bad), 404, "not_found")
    problem(await exchange(mall, code), 404, "not_found")  # another client's
    assert (await exchange(shop, code)).status_code == 200  # none of it spent the code


async def test_a_code_whose_redemption_was_purged_is_not_found(
    shop: Tenant, http: httpx.AsyncClient, state: AppState
) -> None:
    landed = await follow(http, await shop.mint())
    # Within the link's lifetime: its audit row goes at the retention window (API.md).
    await purge(state.store, datetime.now(UTC) + timedelta(seconds=1), retention=timedelta(0))
    problem(await exchange(shop, landed["code"]), 404, "not_found")


BAD_EXCHANGES: list[Any] = [
    {},
    {"code": None},
    {"code": 12345},
    {"code": ["a"]},
    {"code": ""},
    {"code": "a\x00b"},
    {"code": "x" * 1025},
    {"code": "abc", "extra": 1},
    "not an object",
]


async def test_bad_exchange_bodies_are_clear_problems(shop: Tenant) -> None:
    for body in BAD_EXCHANGES:
        response = await shop.http.post("/v1/redemptions/exchange", json=body, headers=shop.headers)
        problem(response, 422, "validation_error")
    not_json = await shop.http.post(
        "/v1/redemptions/exchange",
        content=b"\xff{",
        headers={**shop.headers, "content-type": "application/json"},
    )
    assert not_json.status_code in (400, 422), not_json.text
    assert not_json.headers["content-type"] == "application/problem+json"


async def test_the_exchange_wants_an_api_key(shop: Tenant, http: httpx.AsyncClient) -> None:
    landed = await follow(http, await shop.mint())
    response = await http.post("/v1/redemptions/exchange", json={"code": landed["code"]})
    problem(response, 401, "unauthorized")
    assert (await exchange(shop, landed["code"])).status_code == 200


# --- typed codes: minting ----------------------------------------------------------------


async def test_a_link_has_a_typed_code_when_asked_or_its_action_says_so(
    shop: Tenant, admin_headers: Headers
) -> None:
    plain = await shop.mint()
    assert "code" not in plain
    coded = await shop.mint(code=True)
    assert len(coded["code"]) == 6
    assert coded["code"].isdigit()
    await shop.put_action("typed", admin_headers, code=True)
    action = await shop.http.get("/v1/admin/clients/shop/actions/typed", headers=admin_headers)
    assert action.json()["code"] is True
    assert "code" in await shop.mint("typed")
    assert "code" not in await shop.mint("typed", code=False)
    batch = await shop.http.post(
        "/v1/links/batch",
        json={"links": [{"action": "activate", "code": True}, {"action": "activate"}]},
        headers=shop.headers,
    )
    first, second = batch.json()["links"]
    assert len(first["code"]) == 6
    assert "code" not in second


# --- typed codes: redeeming -------------------------------------------------------------


async def test_the_right_code_redeems_once_like_following_the_link(
    shop: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    link = await shop.mint(subject="42", code=True)
    response = await redeem_code(shop, link["token"], link["code"])
    assert response.status_code == 200, response.text
    redemption = response.json()
    assert (redemption["link_id"], redemption["subject"], redemption["use"]) == (
        link["id"],
        "42",
        1,
    )
    assert (redemption["via"], redemption["exchanged_at"]) == ("code", None)
    assert redemption["delivery"]["status"] == "none"
    rows = await fetch(database_url, "SELECT id, via FROM redemptions")
    assert [(r["id"], r["via"]) for r in rows] == [(redemption["id"], "code")]
    # The same counter as the link's URL.
    problem(await redeem_code(shop, link["token"], link["code"]), 409, "used")
    assert (await follow(http, link))["error"] == "used"


async def test_following_the_link_uses_up_the_typed_code_too(
    shop: Tenant, http: httpx.AsyncClient
) -> None:
    link = await shop.mint(code=True, max_uses=2)
    assert "redemption_id" in await follow(http, link)
    spelled = f" {link['code'][:3]}-{link['code'][3:]}"  # spaces and hyphens are ignored
    assert (await redeem_code(shop, link["token"], spelled)).json()["use"] == 2
    problem(await redeem_code(shop, link["token"], link["code"]), 409, "used")


async def test_five_wrong_codes_lock_the_code_but_not_the_link(
    shop: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    link = await shop.mint(code=True)
    other = await shop.mint(code=True)
    left = [
        problem(await redeem_code(shop, link["token"], bad), 422, "wrong_code")["attempts_left"]
        for bad in (wrong(link["code"]), "000000x", "12", wrong(wrong(link["code"])), "abcdef")
    ]
    assert left == [4, 3, 2, 1, 0]
    problem(await redeem_code(shop, link["token"], wrong(link["code"])), 429, "code_locked")
    problem(await redeem_code(shop, link["token"], link["code"]), 429, "code_locked")
    # Other links are not affected; this one's URL still works.
    assert (await redeem_code(shop, other["token"], other["code"])).status_code == 200
    assert "redemption_id" in await follow(http, link)
    rows = await fetch(database_url, "SELECT failures FROM code_failures")
    assert [r["failures"] for r in rows] == [5]


async def test_typed_code_refusals_carry_the_redirects_error_word(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, state: AppState
) -> None:
    expired = sign(state, code=True, expires_at=int(time.time()) - 5)
    code = state.codec.typed_code(state.codec.verify_link(expired))
    problem(await redeem_code(shop, expired, code), 410, "expired")

    revoked = await shop.mint(subject="7", code=True)
    created = await shop.http.post("/v1/revocations", json={"subject": "7"}, headers=shop.headers)
    assert created.status_code == 201
    problem(await redeem_code(shop, revoked["token"], revoked["code"]), 410, "revoked")

    deleted = await shop.mint(code=True)
    await shop.put_action("activate", admin_headers, enabled=False)
    problem(await redeem_code(shop, deleted["token"], deleted["code"]), 403, "disabled")


async def test_a_token_of_another_client_or_none_is_not_found(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    mall = await make_tenant(http, admin_headers, "mall")
    theirs = await mall.mint(code=True)
    problem(await redeem_code(shop, theirs["token"], theirs["code"]), 404, "not_found")
    ours = await shop.mint(code=True)
    landed = await follow(http, await shop.mint())
    tampered = ours["token"][:-1] + ("A" if ours["token"][-1] != "A" else "Q")
    for token in (tampered, landed["code"], "garbage", ours["id"]):
        problem(await redeem_code(shop, token, ours["code"]), 404, "not_found")
    assert (await redeem_code(mall, theirs["token"], theirs["code"])).status_code == 200


async def test_a_link_without_a_code_cannot_be_redeemed_with_one(
    shop: Tenant, state: AppState
) -> None:
    link = await shop.mint()
    claims = state.codec.verify_link(link["token"])
    # Even its would-be code: the link was minted without one.
    problem(
        await redeem_code(shop, link["token"], state.codec.typed_code(claims)),
        422,
        "code_not_enabled",
    )


BAD_REDEEMS: list[Json] = [
    {},
    {"token": "t"},
    {"code": "123456"},
    {"token": None, "code": "123456"},
    {"token": "t", "code": 123456},
    {"token": ["t"], "code": "123456"},
    {"token": "t\x00", "code": "123456"},
    {"token": "t", "code": "123\x00456"},
    {"token": "", "code": "123456"},
    {"token": "t", "code": ""},
    {"token": "t", "code": "1" * 65},
    {"token": "x" * 20_000, "code": "123456"},
    {"token": "t", "code": "123456", "more": True},
]


async def test_bad_typed_code_bodies_are_clear_problems(shop: Tenant) -> None:
    for body in BAD_REDEEMS:
        response = await shop.http.post("/v1/links/redeem", json=body, headers=shop.headers)
        problem(response, 422, "validation_error")
    get = await shop.http.get("/v1/links/redeem", headers=shop.headers)
    assert (get.status_code, get.headers["allow"]) == (405, "POST")
    get = await shop.http.get("/v1/redemptions/exchange", headers=shop.headers)
    assert (get.status_code, get.headers["allow"]) == (405, "POST")


# --- typed codes: webhooks ----------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().up()
    yield receiver
    receiver.down()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_timeout": 1.0})


async def test_a_typed_code_delivers_webhooks_and_sync_can_veto(
    http: httpx.AsyncClient, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    shop = await make_tenant(http, admin_headers, "shop", webhook_url=receiver.url)
    await shop.put_action("hooked", admin_headers, delivery="async", code=True)
    await shop.put_action("vetoed", admin_headers, delivery="sync", code=True)

    hooked = await shop.mint("hooked")
    redemption = (await redeem_code(shop, hooked["token"], hooked["code"])).json()
    [request] = await receiver.wait_for(1)
    assert request.verify(shop.webhook_secret)["data"]["redemption_id"] == redemption["id"]

    vetoed = await shop.mint("vetoed")
    receiver.answer(Answer(409, json={"error": "out_of_stock"}))
    body = problem(await redeem_code(shop, vetoed["token"], vetoed["code"]), 409, "rejected")
    assert body["reason"] == "out_of_stock"
    receiver.answer(Answer(503))
    refused = await redeem_code(shop, vetoed["token"], vetoed["code"])
    problem(refused, 503, "unavailable")
    assert refused.headers["retry-after"]
    # Each use was given back: the link still redeems, by code or by URL.
    receiver.answer(Answer(200))
    accepted = await redeem_code(shop, vetoed["token"], vetoed["code"])
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["delivery"]["status"] == "delivered"
    rows = await fetch(database_url, "SELECT via FROM redemptions ORDER BY seq")
    assert [r["via"] for r in rows] == ["code", "code"]


# --- supersede -----------------------------------------------------------------------------


async def test_supersede_revokes_the_earlier_links_of_that_subject_and_action(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await shop.put_action("other", admin_headers)
    first, second = await shop.mint(subject="42"), await shop.mint(subject="42")
    other_action = await shop.mint("other", subject="42")
    other_subject = await shop.mint(subject="43")
    newest = await shop.mint(subject="42", supersede=True)
    later = await shop.mint(subject="42")
    assert (await follow(http, first))["error"] == "revoked"
    assert (await follow(http, second))["error"] == "revoked"
    for fine in (newest, later, other_action, other_subject):
        assert "redemption_id" in await follow(http, fine)
    # A second supersede revokes the first one's link.
    again = await shop.mint(subject="42", supersede=True)
    replaced = await shop.mint(subject="42", supersede=True)
    assert (await follow(http, again))["error"] == "revoked"
    assert "redemption_id" in await follow(http, replaced)


async def test_supersede_in_a_batch_and_its_validation(
    shop: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    old = await shop.mint(subject="42")
    batch = await shop.http.post(
        "/v1/links/batch",
        json={
            "links": [
                {"action": "activate", "subject": "42"},
                {"action": "activate", "subject": "42", "supersede": True},
                {"action": "activate", "subject": "42"},
            ]
        },
        headers=shop.headers,
    )
    assert batch.status_code == 201, batch.text
    before, newest, after = batch.json()["links"]
    assert (await follow(http, old))["error"] == "revoked"
    assert (await follow(http, before))["error"] == "revoked"
    assert "redemption_id" in await follow(http, newest)
    assert "redemption_id" in await follow(http, after)

    alone = await shop.http.post(
        "/v1/links", json={"action": "activate", "supersede": True}, headers=shop.headers
    )
    assert problem(alone, 422, "validation_error")["errors"][0]["loc"][-1] == "supersede"
    for value in ("yes", 1, None):
        response = await shop.http.post(
            "/v1/links",
            json={"action": "activate", "subject": "42", "supersede": value},
            headers=shop.headers,
        )
        problem(response, 422, "validation_error")
    bad_item = await shop.http.post(
        "/v1/links/batch",
        json={"links": [{"action": "activate"}, {"action": "activate", "supersede": True}]},
        headers=shop.headers,
    )
    assert [e["index"] for e in problem(bad_item, 422, "validation_error")["errors"]] == [1]
    rows = await fetch(database_url, "SELECT count(*) AS n FROM subject_revocations")
    assert rows[0]["n"] == 1  # the refused requests wrote nothing


async def test_only_a_superseding_mint_writes_and_it_writes_one_statement(
    shop: Tenant, state: AppState
) -> None:
    await shop.mint()  # the API key and the client are cached from here on
    statements: list[str] = []
    checkouts: list[object] = []
    engine = state.store.engine.sync_engine
    # The requests run in this test's task (ASGITransport); the app's background
    # work (the webhook dispatcher's polls) runs in tasks of its own.
    requests = asyncio.current_task()

    def executed(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if asyncio.current_task() is requests:
            statements.append(statement)

    def checked_out(*args: Any) -> None:
        if asyncio.current_task() is requests:
            checkouts.append(args)

    event.listen(engine, "before_cursor_execute", executed)
    event.listen(engine.pool, "checkout", checked_out)
    try:
        for _ in range(20):
            await shop.mint(subject="42", code=True, once_key="k")
        batch = await shop.http.post(
            "/v1/links/batch",
            json={"links": [{"action": "activate", "subject": str(n)} for n in range(50)]},
            headers=shop.headers,
        )
        assert batch.status_code == 201
        assert (statements, checkouts) == ([], [])  # no connection, no statement

        await shop.mint(subject="42", supersede=True)
        assert len(statements) == 1
        assert "subject_revocations" in statements[0]
        statements.clear()
        superseding = [{"action": "activate", "subject": "42", "supersede": True}] * 3
        await shop.http.post("/v1/links/batch", json={"links": superseding}, headers=shop.headers)
        assert len(statements) == 1  # one per subject and action, however many items
    finally:
        event.remove(engine, "before_cursor_execute", executed)
        event.remove(engine.pool, "checkout", checked_out)


# --- helpers -------------------------------------------------------------------------------


def sign(state: AppState, **fields: Any) -> str:
    now_us = time.time_ns() // 1000
    claims: dict[str, Any] = {
        "link_id": state.codec.mint_link_id("shop"),
        "client_id": "shop",
        "action": "activate",
        "subject": None,
        "data": None,
        "issued_at_us": now_us,
        "expires_at": now_us // 1_000_000 + 3600,
        "max_uses": 1,
    }
    claims.update(fields)
    return state.codec.sign_link(LinkClaims(**claims))
