"""Redemption through ``/r/{token}``: every outcome of API.md except the webhook rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.config import Settings
from service.main import create_app
from service.state import AppState
from service.tokens import LinkClaims
from tests.conftest import SHOP_ORIGIN, Tenant, link_path, make_tenant
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.links import random_link_id
from tests.support.proxy import TcpProxy
from tests.support.receiver import Receiver

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

Headers = dict[str, str]
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-robots-tag": "noindex, nofollow",
    "x-content-type-options": "nosniff",
}


def assert_link_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    if response.headers.get("content-type", "").startswith("text/html"):
        assert "default-src 'none'" in response.headers["content-security-policy"]


def redirect_of(response: httpx.Response) -> tuple[str, dict[str, list[str]]]:
    assert response.status_code == 303, response.text
    assert_link_headers(response)
    parts = urlsplit(response.headers["location"])
    return f"{parts.scheme}://{parts.netloc}{parts.path}", parse_qs(parts.query)


async def revoke(shop: Tenant, link: dict[str, Any]) -> None:
    response = await shop.http.delete(f"/v1/links/{link['id']}", headers=shop.headers)
    assert response.status_code == 204


async def count(database_url: str, table: str) -> int:
    return int((await fetch(database_url, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


async def test_success_then_used(shop: Tenant, http: httpx.AsyncClient, database_url: str) -> None:
    link = await shop.mint(subject="42", data={"k": "v"})
    target, query = redirect_of(await http.get(link_path(link)))
    assert target == f"{SHOP_ORIGIN}/welcome"
    assert query["link_id"] == [link["id"]]
    redemption_id = query["redemption_id"][0]
    rows = await fetch(database_url, "SELECT * FROM redemptions")
    assert len(rows) == 1
    row = rows[0]
    assert (row["id"], row["link_id"], row["subject"], row["use"]) == (
        redemption_id,
        link["id"],
        "42",
        1,
    )

    target, query = redirect_of(await http.get(link_path(link)))
    assert target == f"{SHOP_ORIGIN}/oops"
    assert query == {"error": ["used"], "link_id": [link["id"]]}
    assert await count(database_url, "redemptions") == 1


async def test_post_redeems_too(shop: Tenant, http: httpx.AsyncClient) -> None:
    link = await shop.mint()
    _, query = redirect_of(await http.post(link_path(link)))
    assert "redemption_id" in query


async def test_head_never_redeems(shop: Tenant, http: httpx.AsyncClient, database_url: str) -> None:
    link = await shop.mint()
    for _ in range(5):
        response = await http.head(link_path(link))
        assert response.status_code == 200
        assert response.content == b""
        assert_link_headers(response)
    assert await count(database_url, "claims") == 0
    assert await count(database_url, "redemptions") == 0
    redirect_of(await http.get(link_path(link)))
    used = await http.head(link_path(link))
    assert "error=used" in redirect_of(used)[0] + used.headers["location"]
    assert await count(database_url, "redemptions") == 1


async def test_existing_query_parameters_are_kept(shop: Tenant, http: httpx.AsyncClient) -> None:
    link = await shop.mint(
        success_url=f"{SHOP_ORIGIN}/welcome?ref=mail", failure_url=f"{SHOP_ORIGIN}/oops?lang=de"
    )
    target, query = redirect_of(await http.get(link_path(link)))
    assert query["ref"] == ["mail"]
    assert "redemption_id" in query
    _, query = redirect_of(await http.get(link_path(link)))
    assert (query["lang"], query["error"]) == (["de"], ["used"])


async def test_n_use_and_unlimited_links(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    link = await shop.mint(max_uses=3)
    outcomes = [redirect_of(await http.get(link_path(link)))[1].get("error") for _ in range(5)]
    assert outcomes == [None, None, None, ["used"], ["used"]]
    uses = await fetch(database_url, "SELECT use FROM redemptions ORDER BY seq")
    assert [r["use"] for r in uses] == [1, 2, 3]

    await shop.put_action("forever", admin_headers, max_uses=None)
    unlimited = await shop.mint("forever")
    for _ in range(10):
        assert "redemption_id" in redirect_of(await http.get(link_path(unlimited)))[1]


async def test_once_key_shares_one_budget(shop: Tenant, http: httpx.AsyncClient) -> None:
    first = await shop.mint(once_key="voucher:123")
    second = await shop.mint(once_key="voucher:123")
    other = await shop.mint(once_key="voucher:456")
    assert "redemption_id" in redirect_of(await http.get(link_path(first)))[1]
    assert redirect_of(await http.get(link_path(second)))[1]["error"] == ["used"]
    assert "redemption_id" in redirect_of(await http.get(link_path(other)))[1]


async def test_once_keys_are_per_client(http: httpx.AsyncClient, admin_headers: Headers) -> None:
    a = await make_tenant(http, admin_headers, "a")
    b = await make_tenant(http, admin_headers, "b")
    for tenant in (a, b):
        link = await tenant.mint(once_key="voucher:1")
        assert "redemption_id" in redirect_of(await http.get(link_path(link)))[1]


def sign(state: AppState, **fields: object) -> str:
    now_us = time.time_ns() // 1000
    claims: dict[str, object] = {
        "link_id": random_link_id(),
        "client_id": "shop",
        "action": "activate",
        "subject": None,
        "data": None,
        "issued_at_us": now_us,
        "expires_at": now_us // 1_000_000 + 3600,
        "max_uses": 1,
    }
    claims.update(fields)
    return state.codec.sign_link(LinkClaims(**claims))  # type: ignore[arg-type]


async def test_expired(
    shop: Tenant, http: httpx.AsyncClient, state: AppState, database_url: str
) -> None:
    token = sign(state, expires_at=int(time.time()) - 2)
    target, query = redirect_of(await http.get(f"/r/{token}"))
    assert (target, query["error"]) == (f"{SHOP_ORIGIN}/oops", ["expired"])
    assert "link_id" in query
    assert await count(database_url, "claims") == 0


async def test_revoked_link_and_subject(
    shop: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    link = await shop.mint(subject="42")
    spared = await shop.mint(subject="43")
    await revoke(shop, link)
    assert redirect_of(await http.get(link_path(link)))[1]["error"] == ["revoked"]
    revoked = await http.post("/v1/revocations", json={"subject": "43"}, headers=shop.headers)
    assert revoked.status_code == 201
    assert redirect_of(await http.get(link_path(spared)))[1]["error"] == ["revoked"]
    later = await shop.mint(subject="43")
    assert "redemption_id" in redirect_of(await http.get(link_path(later)))[1]
    assert await count(database_url, "redemptions") == 1


async def test_disabled_client_and_action(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    link = await shop.mint()
    await http.patch("/v1/admin/clients/shop", json={"enabled": False}, headers=admin_headers)
    assert redirect_of(await http.get(link_path(link)))[1]["error"] == ["disabled"]
    await http.patch("/v1/admin/clients/shop", json={"enabled": True}, headers=admin_headers)
    await shop.put_action("activate", admin_headers, enabled=False)
    assert redirect_of(await http.get(link_path(link)))[1]["error"] == ["disabled"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().up()
    yield receiver
    receiver.down()


async def test_a_success_url_that_left_the_allowlist_disables_the_link_before_any_claim(
    http: httpx.AsyncClient, admin_headers: Headers, database_url: str, receiver: Receiver
) -> None:
    """Nothing is claimed, recorded or delivered for a link whose success (the action's
    or its own) can no longer be redirected to, whichever door it comes through."""
    shop = await make_tenant(http, admin_headers, "shop", webhook_url=receiver.url)
    await shop.put_action("activate", admin_headers, delivery="async", max_uses=3)
    await shop.put_action("confirmed", admin_headers, delivery="sync", confirm="page")
    own = await shop.mint(success_url=f"{SHOP_ORIGIN}/special")
    plain, confirmed = await shop.mint(), await shop.mint("confirmed")

    async def patch(allowed: list[str]) -> None:
        body = {"allowed_redirects": allowed}
        response = await http.patch("/v1/admin/clients/shop", json=body, headers=admin_headers)
        assert response.status_code == 200, response.text

    async def refused(link: dict[str, Any]) -> None:
        path = link_path(link)
        for response in (await http.get(path), await http.post(path), await http.head(path)):
            _, query = redirect_of(response)
            assert query == {"error": ["disabled"], "link_id": [link["id"]]}
        inspected = await http.post(
            "/v1/links/inspect", json={"token": link["token"]}, headers=shop.headers
        )
        assert (inspected.json()["valid"], inspected.json()["reason"]) == (False, "disabled")

    # The link's own success URL left; the action's and the failure URL are still in.
    await patch([f"{SHOP_ORIGIN}/welcome", f"{SHOP_ORIGIN}/oops"])
    await refused(own)
    assert "redemption_id" in redirect_of(await http.get(link_path(plain)))[1]
    # The action's success URL left too.
    await patch([f"{SHOP_ORIGIN}/oops"])
    for link in (plain, confirmed):
        await refused(link)
    # With the failure URL gone as well, a page.
    await patch(["https://elsewhere.example/"])
    for link in (own, plain, confirmed):
        assert (await http.get(link_path(link))).status_code == 410

    assert await count(database_url, "claims") == 1
    assert await count(database_url, "redemptions") == 1
    assert await count(database_url, "deliveries") == 1
    await asyncio.sleep(0.5)  # anything the dispatcher might have sent has arrived
    assert len(receiver.received) == 1


async def test_deleted_action_without_failure_url_is_a_410_page(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    link = await shop.mint()
    await http.delete("/v1/admin/clients/shop/actions/activate", headers=admin_headers)
    response = await http.get(link_path(link))
    assert response.status_code == 410
    assert response.headers["content-type"].startswith("text/html")
    assert_link_headers(response)


@pytest.mark.parametrize("outcome", ["used", "expired", "revoked"])
async def test_failures_without_failure_url_are_410_pages(
    shop: Tenant,
    http: httpx.AsyncClient,
    admin_headers: Headers,
    state: AppState,
    database_url: str,
    outcome: str,
) -> None:
    await shop.put_action("activate", admin_headers, failure_url=None)
    link = await shop.mint()
    token = link["token"]
    if outcome == "used":
        redirect_of(await http.get(link_path(link)))
    elif outcome == "expired":
        token = sign(state, expires_at=int(time.time()) - 5)
    else:
        await revoke(shop, link)
    response = await http.get(f"/r/{token}")
    assert response.status_code == 410
    assert_link_headers(response)
    assert "location" not in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/r/garbage",
        "/r/" + "A" * 10_240,
        "/r/%00%ff%fe",
        "/r/%2e%2e%2fadmin",
        "/r/a/b/c",
        "/r/.eJyrVspUslKKL_crDPN2j89NDQk0868sUNJRSgYKp6Tm5gOZiUBmeWpOcn5uKpBXomRlaG5pamZkbmZuYWZmbG5sqaOUChE0NzQxMLfQUSoG6jAxAipOUbKqBuk3rNVRygVRAMjHHNU.gANVURXDM3qsjw_U0c2jH0odOR6D0l4tMP6OJoa1BgM",
        "/r/%C3%A9%E2%82%AC",
        "/r/%",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
async def test_untrusted_tokens_get_the_400_page(
    shop: Tenant, http: httpx.AsyncClient, database_url: str, path: str, method: str
) -> None:
    response = await http.request(method, path)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert_link_headers(response)
    if method != "HEAD":
        assert "<html" in response.text
    assert await count(database_url, "claims") == 0


async def test_a_token_of_another_deployment_is_untrusted(
    shop: Tenant, http: httpx.AsyncClient
) -> None:
    from service.tokens import TokenCodec

    foreign = TokenCodec([b"another-deployment-key-0123456789abcdef"])
    now_us = time.time_ns() // 1000
    token = foreign.sign_link(
        LinkClaims(
            random_link_id(), "shop", "activate", None, None, now_us, now_us // 10**6 + 60, 1
        )
    )
    assert (await http.get(f"/r/{token}")).status_code == 400


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy().start()
    yield proxy
    proxy.close()


@pytest.mark.backends(POSTGRES)  # the proxy cuts a TCP connection: SQLite has none
async def test_database_unreachable_is_503_and_recovers(
    settings: Settings, proxy: TcpProxy, database_url: str, admin_headers: Headers
) -> None:
    app = create_app(settings.model_copy(update={"database_url": proxy.url_for(database_url)}))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            shop = await make_tenant(http, admin_headers, "shop")
            first, second = await shop.mint(), await shop.mint()
            proxy.cut()
            for _ in range(3):
                response = await http.get(link_path(first))
                assert response.status_code == 503
                assert response.headers["retry-after"]
                assert_link_headers(response)
            minted = await http.post("/v1/links", json={"action": "activate"}, headers=shop.headers)
            assert minted.status_code == 201  # minting needs no database once the key is cached
            assert await count(database_url, "redemptions") == 0
            proxy.restore()
            # At most one 503 while the pool notices that its connections died.
            response = await http.get(link_path(first))
            if response.status_code == 503:
                response = await http.get(link_path(first))
            assert "redemption_id" in redirect_of(response)[1]
            assert "redemption_id" in redirect_of(await http.get(link_path(second)))[1]
    assert await count(database_url, "redemptions") == 2
