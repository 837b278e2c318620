"""The audit log: newest first, stable cursor pagination, filters, delivery state, isolation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.audit import encode_cursor
from service.state import AppState
from service.store import Filters
from tests.conftest import Tenant, make_tenant
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.links import redeem, redemption_id_of

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

Headers = dict[str, str]
REDEMPTION_FIELDS = {
    "id",
    "link_id",
    "action",
    "subject",
    "data",
    "use",
    "max_uses",
    "once_key",
    "via",
    "redeemed_at",
    "exchanged_at",
    "delivery",
}


async def page(shop: Tenant, **params: Any) -> dict[str, Any]:
    response = await shop.http.get("/v1/redemptions", params=params, headers=shop.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def redeem_times(http: httpx.AsyncClient, link: dict[str, Any], times: int) -> None:
    for _ in range(times):
        assert await redeem(http, link) == "success"


@pytest.fixture
async def forever(shop: Tenant, admin_headers: Headers) -> Tenant:
    await shop.put_action("forever", admin_headers, max_uses=None)
    return shop


async def test_pages_neither_repeat_nor_skip_while_new_redemptions_arrive(
    forever: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    link = await forever.mint("forever")
    await redeem_times(http, link, 25)
    originals = [r["id"] for r in await fetch(database_url, "SELECT id FROM redemptions")]

    first = await page(forever, limit=10)
    assert len(first["items"]) == 10
    await redeem_times(http, link, 5)  # arrive between page 1 and page 2
    second = await page(forever, limit=10, cursor=first["next_cursor"])
    third = await page(forever, limit=10, cursor=second["next_cursor"])
    assert third["next_cursor"] is None

    seen = [item["id"] for p in (first, second, third) for item in p["items"]]
    assert sorted(seen) == sorted(originals)  # every original row exactly once
    uses = [item["use"] for p in (first, second, third) for item in p["items"]]
    assert uses == list(range(25, 0, -1))  # newest first

    fresh = await page(forever, limit=10)
    assert [item["use"] for item in fresh["items"]][:5] == [30, 29, 28, 27, 26]


async def test_exact_page_boundary_has_no_next_cursor(
    forever: Tenant, http: httpx.AsyncClient
) -> None:
    link = await forever.mint("forever")
    await redeem_times(http, link, 4)
    first = await page(forever, limit=2)
    second = await page(forever, limit=2, cursor=first["next_cursor"])
    assert (len(second["items"]), second["next_cursor"]) == (2, None)
    empty = await page(forever)
    assert len(empty["items"]) == 4
    assert empty["next_cursor"] is None


async def test_filters(forever: Tenant, http: httpx.AsyncClient, admin_headers: Headers) -> None:
    a = await forever.mint("forever", subject="alice")
    b = await forever.mint("forever", subject="bob")
    c = await forever.mint("activate", subject="alice")
    await redeem_times(http, a, 3)
    await redeem_times(http, b, 2)
    await redeem_times(http, c, 1)

    by_link = await page(forever, link_id=a["id"])
    assert [i["link_id"] for i in by_link["items"]] == [a["id"]] * 3
    by_subject = await page(forever, subject="alice")
    assert sorted(i["link_id"] for i in by_subject["items"]) == sorted([a["id"]] * 3 + [c["id"]])
    by_action = await page(forever, action="activate")
    assert [i["link_id"] for i in by_action["items"]] == [c["id"]]
    both = await page(forever, subject="alice", action="forever")
    assert len(both["items"]) == 3
    assert (await page(forever, subject="nobody"))["items"] == []

    first = await page(forever, subject="alice", limit=2)
    rest = await page(forever, subject="alice", limit=2, cursor=first["next_cursor"])
    assert len(first["items"]) + len(rest["items"]) == 4
    assert rest["next_cursor"] is None
    # A cursor belongs to the filters it was made for.
    changed = await http.get(
        "/v1/redemptions",
        params={"subject": "bob", "cursor": first["next_cursor"]},
        headers=forever.headers,
    )
    assert changed.status_code == 422
    assert changed.json()["code"] == "validation_error"


async def test_a_redemption_and_its_delivery(
    shop: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    link = await shop.mint(subject="42", data={"plan": "pro"})
    redemption_id = redemption_id_of(await http.get("/r/" + link["token"]))

    response = await http.get(f"/v1/redemptions/{redemption_id}", headers=shop.headers)
    assert response.status_code == 200
    item = response.json()
    assert set(item) == REDEMPTION_FIELDS
    row = (await fetch(database_url, "SELECT * FROM redemptions"))[0]
    assert item["redeemed_at"].endswith("Z")
    assert {k: v for k, v in item.items() if k != "redeemed_at"} == {
        "id": redemption_id,
        "link_id": link["id"],
        "action": "activate",
        "subject": "42",
        "data": {"plan": "pro"},
        "use": 1,
        "max_uses": 1,
        "once_key": None,
        "via": "link",
        "exchanged_at": None,
        "delivery": {"status": "none", "attempts": 0, "last_error": None},
    }
    assert row["redeemed_at"].isoformat().replace("+00:00", "Z") == item["redeemed_at"]
    assert (await page(shop))["items"] == [item]

    # With a webhook job, its state shows (written here as the dispatcher would).
    await fetch(
        database_url,
        "INSERT INTO deliveries (redemption_id, client_id, status, attempts, next_attempt_at,"
        " created_at, last_error)"
        " VALUES ($1, 'shop', 'failed', 10, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'HTTP 500')",
        redemption_id,
    )
    delivered = (await http.get(f"/v1/redemptions/{redemption_id}", headers=shop.headers)).json()
    assert delivered["delivery"] == {"status": "failed", "attempts": 10, "last_error": "HTTP 500"}
    assert (await page(shop))["items"][0]["delivery"] == delivered["delivery"]


async def test_clients_see_only_their_own_redemptions(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, state: AppState
) -> None:
    other = await make_tenant(http, admin_headers, "other")
    ours = await shop.mint(subject="42")
    redemption_id = redemption_id_of(await http.get("/r/" + ours["token"]))

    response = await http.get(f"/v1/redemptions/{redemption_id}", headers=other.headers)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert (await page(other))["items"] == []
    assert (await page(other, link_id=ours["id"]))["items"] == []
    # Another client's cursor is refused, not followed.
    theirs = encode_cursor(state.codec, "shop", Filters(), 10**9)
    response = await http.get("/v1/redemptions", params={"cursor": theirs}, headers=other.headers)
    assert response.status_code == 422


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": -1},
        {"limit": "ten"},
        {"cursor": "garbage"},
        {"cursor": ""},
        {"cursor": "x" * 5000},
        {"link_id": "x" * 65},
        {"subject": "x" * 201},
    ],
)
async def test_bad_queries_are_422(
    shop: Tenant, http: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await http.get("/v1/redemptions", params=params, headers=shop.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("field", ["link_id", "subject", "action"])
async def test_nul_in_a_query_is_400(shop: Tenant, http: httpx.AsyncClient, field: str) -> None:
    response = await http.get("/v1/redemptions", params={field: "a\x00b"}, headers=shop.headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"


async def test_a_tampered_cursor_is_422(forever: Tenant, http: httpx.AsyncClient) -> None:
    link = await forever.mint("forever")
    await redeem_times(http, link, 3)
    cursor = (await page(forever, limit=1))["next_cursor"]
    assert (await page(forever, limit=1, cursor=cursor))["items"]
    payload, _, signature = cursor.rpartition(".")
    for forged in (
        payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + signature,
        cursor[:-1] + ("A" if cursor[-1] != "A" else "B"),
        cursor + "A",
    ):
        response = await http.get(
            "/v1/redemptions", params={"limit": 1, "cursor": forged}, headers=forever.headers
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["query", "cursor"]


async def test_limits_at_the_edges_are_accepted(shop: Tenant) -> None:
    for limit in (1, 200):
        assert (await page(shop, limit=limit))["items"] == []


@pytest.mark.parametrize("redemption_id", ["unknown", "x" * 500, "%C3%A9", "a%20b"])
async def test_unknown_redemption_ids_are_404(
    shop: Tenant, http: httpx.AsyncClient, redemption_id: str
) -> None:
    response = await http.get(f"/v1/redemptions/{redemption_id}", headers=shop.headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
