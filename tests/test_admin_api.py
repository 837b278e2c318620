"""The admin API: clients, keys, actions; off without ADMIN_TOKEN; changes seen at once."""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.config import Settings
from service.main import create_app
from tests.conftest import SHOP_ORIGIN, make_tenant
from tests.support.database import POSTGRES, SQLITE, fetch

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

Headers = dict[str, str]


async def test_admin_api_is_absent_without_a_token(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"admin_token": None}))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/v1/admin/clients", headers={"Authorization": "Bearer x"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic abc", "Bearer "])
async def test_wrong_admin_token_is_401(http: httpx.AsyncClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = await http.get("/v1/admin/clients", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_client_lifecycle(http: httpx.AsyncClient, admin_headers: Headers) -> None:
    body = {
        "id": "shop",
        "name": "Shop",
        "webhook_url": "https://shop.example/hooks",
        "allowed_redirects": [f"{SHOP_ORIGIN}/"],
    }
    created = await http.post("/v1/admin/clients", json=body, headers=admin_headers)
    assert created.status_code == 201
    client = created.json()
    assert client["webhook_secret"].startswith("whsec_")
    assert client["enabled"] is True
    assert (await http.post("/v1/admin/clients", json=body, headers=admin_headers)).json()[
        "code"
    ] == "conflict"

    listed = await http.get("/v1/admin/clients", headers=admin_headers)
    assert [c["id"] for c in listed.json()] == ["shop"]
    assert "webhook_secret" not in listed.json()[0]

    patched = await http.patch(
        "/v1/admin/clients/shop", json={"name": "Shop 2", "enabled": False}, headers=admin_headers
    )
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["enabled"]) == ("Shop 2", False)
    assert patched.json()["webhook_url"] == "https://shop.example/hooks"  # untouched

    rotated = await http.post("/v1/admin/clients/shop/webhook-secret", headers=admin_headers)
    assert rotated.status_code == 200
    assert rotated.json()["webhook_secret"] not in (client["webhook_secret"], None)

    assert (await http.delete("/v1/admin/clients/shop", headers=admin_headers)).status_code == 204
    missing = await http.get("/v1/admin/clients/shop", headers=admin_headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"id": "Bad Id", "name": "x"},
        {"id": "ok", "name": ""},
        {"id": "ok", "name": "x", "allowed_redirects": ["javascript:alert(1)"]},
        {"id": "ok", "name": "x", "allowed_redirects": "https://a.example/"},
        {"id": "ok", "name": "x", "webhook_url": "not a url"},
        {"id": "ok"},
        {"id": 5, "name": "x"},
    ],
)
async def test_invalid_client_bodies(
    http: httpx.AsyncClient, admin_headers: Headers, body: dict[str, object]
) -> None:
    response = await http.post("/v1/admin/clients", json=body, headers=admin_headers)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert problem["errors"]


async def test_keys_are_shown_once_and_stored_hashed(
    http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    shop = await make_tenant(http, admin_headers, "shop")
    assert shop.key.startswith("alk_")
    assert len(shop.key) >= 4 + 43  # 256 bits of base64url
    listed = (await http.get("/v1/admin/clients/shop/keys", headers=admin_headers)).json()
    assert len(listed) == 1
    assert set(listed[0]) == {"id", "prefix", "created_at"}
    assert shop.key.startswith(listed[0]["prefix"])
    rows = await fetch(database_url, "SELECT * FROM api_keys")
    assert shop.key not in str([dict(r) for r in rows])


async def test_deleted_key_stops_working(http: httpx.AsyncClient, admin_headers: Headers) -> None:
    shop = await make_tenant(http, admin_headers, "shop")
    await shop.mint()
    key_id = (await http.get("/v1/admin/clients/shop/keys", headers=admin_headers)).json()[0]["id"]
    deleted = await http.delete(f"/v1/admin/clients/shop/keys/{key_id}", headers=admin_headers)
    assert deleted.status_code == 204
    response = await http.post("/v1/links", json={"action": "activate"}, headers=shop.headers)
    assert response.status_code == 401
    again = await http.delete(f"/v1/admin/clients/shop/keys/{key_id}", headers=admin_headers)
    assert again.status_code == 404


async def test_actions(http: httpx.AsyncClient, admin_headers: Headers) -> None:
    await make_tenant(http, admin_headers, "shop")
    url = "/v1/admin/clients/shop/actions/redeem_voucher"
    put = await http.put(
        url,
        json={"success_url": f"{SHOP_ORIGIN}/ok", "max_uses": None, "confirm": "page"},
        headers=admin_headers,
    )
    assert put.status_code == 200
    action = put.json()
    assert action["ttl"] == 86400
    assert action["max_ttl"] == 2592000
    assert action["max_uses"] is None
    assert (action["confirm"], action["delivery"], action["enabled"]) == ("page", "none", True)
    assert action["failure_url"] is None

    replaced = await http.put(
        url, json={"success_url": f"{SHOP_ORIGIN}/ok2"}, headers=admin_headers
    )
    assert replaced.json()["max_uses"] == 1  # replaced, not merged
    names = [
        a["name"] for a in (await http.get(url.rsplit("/", 1)[0], headers=admin_headers)).json()
    ]
    assert names == ["activate", "redeem_voucher"]
    assert (await http.get(url, headers=admin_headers)).json()["success_url"].endswith("/ok2")
    assert (await http.delete(url, headers=admin_headers)).status_code == 204
    assert (await http.get(url, headers=admin_headers)).status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"success_url": "https://evil.example/"}, "redirect_not_allowed"),
        (
            {"success_url": f"{SHOP_ORIGIN}/", "failure_url": "https://evil/"},
            "redirect_not_allowed",
        ),
        ({"success_url": f"{SHOP_ORIGIN}/", "ttl": 100, "max_ttl": 50}, "validation_error"),
        ({"success_url": f"{SHOP_ORIGIN}/", "delivery": "async"}, "validation_error"),
        ({"success_url": f"{SHOP_ORIGIN}/", "confirm": "maybe"}, "validation_error"),
        ({"success_url": f"{SHOP_ORIGIN}/", "max_uses": 0}, "validation_error"),
        ({}, "validation_error"),
    ],
)
async def test_invalid_actions(
    http: httpx.AsyncClient, admin_headers: Headers, body: dict[str, object], code: str
) -> None:
    await make_tenant(http, admin_headers, "shop")  # no webhook_url
    response = await http.put("/v1/admin/clients/shop/actions/x", json=body, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["code"] == code


async def test_webhook_actions_need_a_webhook_url(
    http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await make_tenant(http, admin_headers, "shop", webhook_url="https://shop.example/hook")
    url = "/v1/admin/clients/shop/actions/paid"
    body = {"success_url": f"{SHOP_ORIGIN}/", "delivery": "sync"}
    assert (await http.put(url, json=body, headers=admin_headers)).status_code == 200
    removed = await http.patch(
        "/v1/admin/clients/shop", json={"webhook_url": None}, headers=admin_headers
    )
    assert removed.status_code == 422


async def test_unknown_client_is_404_everywhere(
    http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    for method, path in [
        ("GET", "/v1/admin/clients/nope"),
        ("PATCH", "/v1/admin/clients/nope"),
        ("DELETE", "/v1/admin/clients/nope"),
        ("POST", "/v1/admin/clients/nope/keys"),
        ("GET", "/v1/admin/clients/nope/keys"),
        ("GET", "/v1/admin/clients/nope/actions"),
        ("POST", "/v1/admin/clients/nope/webhook-secret"),
    ]:
        body: dict[str, object] | None = {} if method == "PATCH" else None
        response = await http.request(method, path, headers=admin_headers, json=body)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "not_found"
