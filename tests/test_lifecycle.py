"""Revocation, status and inspection of links, each client seeing only its own."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.lifecycle import LONGEST_LINK_LIFETIME
from service.registry import ClientConfig
from service.state import AppState
from service.tokens import LinkClaims
from tests.conftest import Tenant, make_tenant
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.links import redeem

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

Headers = dict[str, str]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def count(database_url: str, table: str) -> int:
    return int((await fetch(database_url, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


# --- revoking one link --------------------------------------------------------------


async def test_revoke_one_link(shop: Tenant, http: httpx.AsyncClient, database_url: str) -> None:
    link = await shop.mint(max_uses=5)
    other = await shop.mint(max_uses=5)
    assert await redeem(http, link) == "success"

    response = await http.delete(f"/v1/links/{link['id']}", headers=shop.headers)
    assert (response.status_code, response.content) == (204, b"")
    assert await redeem(http, link) == "revoked"
    assert await redeem(http, other) == "success"

    again = await http.delete(f"/v1/links/{link['id']}", headers=shop.headers)
    assert again.status_code == 204
    rows = await fetch(database_url, "SELECT * FROM revocations")
    assert len(rows) == 1
    # Kept as long as any link could live, so it outlasts the link it refuses.
    assert rows[0]["expires_at"] - rows[0]["revoked_at"] == LONGEST_LINK_LIFETIME
    assert rows[0]["expires_at"] > parse_time(link["expires_at"])
    status = (await http.get(f"/v1/links/{link['id']}", headers=shop.headers)).json()
    assert (status["uses"], status["revoked"]) == (1, True)


# --- revoking a subject ---------------------------------------------------------------


async def test_subject_revocation_of_one_action(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await shop.put_action("unsubscribe", admin_headers)
    activate_42 = await shop.mint("activate", subject="42")
    unsubscribe_42 = await shop.mint("unsubscribe", subject="42")
    activate_43 = await shop.mint("activate", subject="43")

    response = await http.post(
        "/v1/revocations", json={"subject": "42", "action": "activate"}, headers=shop.headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["subject"], body["action"]) == ("42", "activate")
    assert parse_time(body["revoked_at"]) <= datetime.now(UTC)

    assert await redeem(http, activate_42) == "revoked"
    assert await redeem(http, unsubscribe_42) == "success"
    assert await redeem(http, activate_43) == "success"


async def test_subject_revocation_spares_links_minted_after_it_in_the_same_second(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, state: AppState
) -> None:
    await shop.put_action("unsubscribe", admin_headers)
    for _ in range(5):  # until all three fall in one second (almost always the first time)
        before = await shop.mint("unsubscribe", subject="7")
        revoked = await http.post("/v1/revocations", json={"subject": "7"}, headers=shop.headers)
        after = await shop.mint("activate", subject="7")
        seconds = {
            state.codec.verify_link(before["token"]).issued_at_us // 1_000_000,
            int(parse_time(revoked.json()["revoked_at"]).timestamp()),
            state.codec.verify_link(after["token"]).issued_at_us // 1_000_000,
        }
        if len(seconds) == 1:
            break
    assert len(seconds) == 1, "could not mint and revoke within one second"
    assert revoked.status_code == 201
    assert revoked.json()["action"] is None
    assert await redeem(http, before) == "revoked"  # every action, not only one
    assert await redeem(http, after) == "success"


async def test_revoking_a_subject_again_keeps_the_latest_time(
    shop: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    first = await http.post("/v1/revocations", json={"subject": "9"}, headers=shop.headers)
    link = await shop.mint(subject="9")
    second = await http.post("/v1/revocations", json={"subject": "9"}, headers=shop.headers)
    assert parse_time(second.json()["revoked_at"]) > parse_time(first.json()["revoked_at"])
    rows = await fetch(database_url, "SELECT * FROM subject_revocations")
    assert len(rows) == 1
    assert (rows[0]["action"], rows[0]["revoked_at"]) == (
        "*",
        parse_time(second.json()["revoked_at"]),
    )
    assert rows[0]["expires_at"] - rows[0]["revoked_at"] == LONGEST_LINK_LIFETIME
    assert await redeem(http, link) == "revoked"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"subject": "42", "action": "nope"}, 422, "unknown_action"),
        ({"action": "activate"}, 422, "validation_error"),
        ({"subject": ""}, 422, "validation_error"),
        ({"subject": "x" * 201}, 422, "validation_error"),
        ({"subject": 42}, 422, "validation_error"),
        ({"subject": "a\u0000b"}, 422, "validation_error"),
        ({"subject": "42", "extra": 1}, 422, "validation_error"),
    ],
)
async def test_bad_subject_revocations(
    shop: Tenant,
    http: httpx.AsyncClient,
    database_url: str,
    body: dict[str, object],
    status: int,
    code: str,
) -> None:
    response = await http.post("/v1/revocations", json=body, headers=shop.headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert await count(database_url, "subject_revocations") == 0


# --- status ---------------------------------------------------------------------------


async def test_status_after_three_of_five_uses(
    shop: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    link = await shop.mint(max_uses=5)
    never = await http.get(f"/v1/links/{link['id']}", headers=shop.headers)
    assert never.json() == {
        "id": link["id"],
        "uses": 0,
        "revoked": False,
        "first_redeemed_at": None,
        "last_redeemed_at": None,
    }
    for _ in range(3):
        assert await redeem(http, link) == "success"
    response = await http.get(f"/v1/links/{link['id']}", headers=shop.headers)
    assert response.status_code == 200
    status = response.json()
    assert (status["id"], status["uses"], status["revoked"]) == (link["id"], 3, False)
    rows = await fetch(database_url, "SELECT redeemed_at FROM redemptions")
    times = sorted(row["redeemed_at"] for row in rows)
    assert parse_time(status["first_redeemed_at"]) == times[0]
    assert parse_time(status["last_redeemed_at"]) == times[-1]
    assert times[0] < times[-1]


async def test_status_of_links_sharing_a_once_key_counts_each_link(
    shop: Tenant, http: httpx.AsyncClient
) -> None:
    first = await shop.mint(once_key="voucher:1", max_uses=3)
    second = await shop.mint(once_key="voucher:1", max_uses=3)
    assert [await redeem(http, link) for link in (first, first, second)] == ["success"] * 3
    assert await redeem(http, second) == "used"
    for link, uses in ((first, 2), (second, 1)):
        status = (await http.get(f"/v1/links/{link['id']}", headers=shop.headers)).json()
        assert status["uses"] == uses
        assert status["first_redeemed_at"] is not None


# --- inspect --------------------------------------------------------------------------


async def inspect(shop: Tenant, token: str) -> dict[str, object]:
    response = await shop.http.post(
        "/v1/links/inspect", json={"token": token}, headers=shop.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_inspect_tells_every_state_and_never_redeems(
    shop: Tenant,
    http: httpx.AsyncClient,
    admin_headers: Headers,
    state: AppState,
    database_url: str,
) -> None:
    await shop.put_action("unsubscribe", admin_headers)
    link = await shop.mint(subject="42", data={"plan": "pro"}, max_uses=2)
    for _ in range(3):
        body = await inspect(shop, link["token"])
        assert body == {
            "valid": True,
            "reason": None,
            "link": {
                "id": link["id"],
                "action": "activate",
                "subject": "42",
                "data": {"plan": "pro"},
                "expires_at": link["expires_at"],
                "max_uses": 2,
                "uses": 0,
            },
        }
    assert await count(database_url, "claims") == 0
    assert await count(database_url, "redemptions") == 0

    assert await redeem(http, link) == "success"
    body = await inspect(shop, link["token"])
    assert (body["valid"], body["link"]["uses"]) == (True, 1)  # type: ignore[index]
    assert await redeem(http, link) == "success"
    body = await inspect(shop, link["token"])
    assert (body["valid"], body["reason"], body["link"]["uses"]) == (False, "used", 2)  # type: ignore[index]

    revoked = await shop.mint()
    await http.delete(f"/v1/links/{revoked['id']}", headers=shop.headers)
    assert (await inspect(shop, revoked["token"]))["reason"] == "revoked"
    by_subject = await shop.mint("unsubscribe", subject="77")
    await http.post("/v1/revocations", json={"subject": "77"}, headers=shop.headers)
    assert (await inspect(shop, by_subject["token"]))["reason"] == "revoked"

    now_us = time.time_ns() // 1000
    expired = state.codec.sign_link(
        LinkClaims(
            state.codec.mint_link_id("shop"), "shop", "activate", "5", None,
            now_us - 7_200_000_000, now_us // 1_000_000 - 3600, 1,
        )
    )  # fmt: skip
    body = await inspect(shop, expired)
    assert (body["valid"], body["reason"]) == (False, "expired")
    assert body["link"]["subject"] == "5"  # type: ignore[index]

    disabled = await shop.mint("unsubscribe")
    await shop.put_action("unsubscribe", admin_headers, enabled=False)
    assert (await inspect(shop, disabled["token"]))["reason"] == "disabled"

    for garbage in ("garbage", link["token"][:-2], link["token"] + "x", "a.b.c"):
        assert await inspect(shop, garbage) == {"valid": False, "reason": "invalid", "link": None}
    assert await count(database_url, "redemptions") == 2


@pytest.mark.parametrize(
    "content",
    [
        b"{}",
        b'{"token": ""}',
        b'{"token": 12}',
        b'{"token": null}',
        b'{"token": "' + b"A" * 102_400 + b'"}',
        b"\x00\xff" * 51_200,
        b"not json",
    ],
)
async def test_inspect_refuses_bad_bodies(
    shop: Tenant, http: httpx.AsyncClient, content: bytes
) -> None:
    response = await http.post(
        "/v1/links/inspect",
        content=content,
        headers={**shop.headers, "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"


# --- isolation and unknown ids ----------------------------------------------------------


async def test_clients_only_reach_their_own_links(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    other = await make_tenant(http, admin_headers, "other")
    link = await shop.mint(max_uses=3)
    redeemed = await shop.mint(max_uses=3)
    assert await redeem(http, redeemed) == "success"

    for target in (link, redeemed):
        response = await http.get(f"/v1/links/{target['id']}", headers=other.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
        assert (
            await http.delete(f"/v1/links/{target['id']}", headers=other.headers)
        ).status_code == 404
        assert await inspect(other, target["token"]) == {
            "valid": False,
            "reason": "invalid",
            "link": None,
        }
    assert await count(database_url, "revocations") == 0
    assert await redeem(http, link) == "success"

    # A subject revocation of one client leaves another's links of that subject alone.
    theirs = await other.mint(subject="42")
    ours = await shop.mint(subject="42")
    await http.post("/v1/revocations", json={"subject": "42"}, headers=shop.headers)
    assert (await redeem(http, theirs), await redeem(http, ours)) == ("success", "revoked")


async def test_inspecting_another_clients_token_looks_nothing_up(
    shop: Tenant,
    http: httpx.AsyncClient,
    admin_headers: Headers,
    state: AppState,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused on the token alone: no configuration of the owner is loaded for it."""
    other = await make_tenant(http, admin_headers, "other")
    link = await shop.mint()
    looked_up: list[str] = []
    original = state.registry.client

    async def spy(client_id: str) -> ClientConfig | None:
        looked_up.append(client_id)
        return await original(client_id)

    monkeypatch.setattr(state.registry, "client", spy)
    assert (await inspect(other, link["token"]))["reason"] == "invalid"
    assert "shop" not in looked_up
    assert (await inspect(shop, link["token"]))["valid"] is True
    assert "shop" in looked_up


@pytest.mark.parametrize("link_id", ["unknown", "A" * 20, "x" * 500, "..%2f..", "%C3%A9" * 10])
async def test_unknown_link_ids_are_404(
    shop: Tenant, http: httpx.AsyncClient, link_id: str, database_url: str
) -> None:
    for method in ("GET", "DELETE"):
        response = await http.request(method, f"/v1/links/{link_id}", headers=shop.headers)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"
    assert await count(database_url, "revocations") == 0


async def test_lifecycle_routes_need_an_api_key(shop: Tenant, http: httpx.AsyncClient) -> None:
    link = await shop.mint()
    for method, path, body in (
        ("GET", f"/v1/links/{link['id']}", None),
        ("DELETE", f"/v1/links/{link['id']}", None),
        ("POST", "/v1/links/inspect", {"token": link["token"]}),
        ("POST", "/v1/revocations", {"subject": "1"}),
        ("GET", "/v1/redemptions", None),
        ("GET", "/v1/redemptions/abc", None),
    ):
        response = await http.request(method, path, json=body)
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "unauthorized"


async def test_a_link_expiring_later_than_a_year_cannot_exist(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    """The revocation lifetime rests on this: no action allows more than MAX_TTL_CAP."""
    too_long = int((LONGEST_LINK_LIFETIME + timedelta(seconds=1)).total_seconds())
    response = await http.put(
        f"/v1/admin/clients/{shop.id}/actions/long",
        json={"success_url": "https://shop.example/ok", "ttl": 60, "max_ttl": too_long},
        headers=admin_headers,
    )
    assert response.status_code == 422


@pytest.mark.parametrize("field", ["subject", "once_key"])
async def test_nul_in_stored_strings_is_refused_when_minting(
    shop: Tenant, http: httpx.AsyncClient, field: str
) -> None:
    """PostgreSQL text cannot hold NUL: such a link could never be redeemed (it was a 500)."""
    body = {"action": "activate", field: "a\u0000b"}
    response = await http.post("/v1/links", json=body, headers=shop.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
