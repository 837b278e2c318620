"""Hostile values in bodies, paths and queries: a clear 4xx or a working link, never a 500.

Found by these tests (and fixed): a NUL in a subject or once key minted a
link whose redemption failed with a 500, as did NaN or Infinity in ``data``;
a lone surrogate in ``data`` failed minting with a 500; a NUL in any admin
name, label or path parameter failed with a 500.

One app per backend for the module, a new client per test
(``tests.support.shared_app``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant, link_path
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.shared_app import FIXTURES, on_the_modules_loop

backend, database_url, settings, app, state, http, shop = FIXTURES  # the module's app

Headers = dict[str, str]

# Strings that have broken text handling somewhere before.
NASTY_STRINGS = [
    "\x00",
    "a\x00b",
    "\x01\x1f\x7f",
    "\u200f\u202e",  # right-to-left marks
    "e\u0301",  # combining accent
    "\ufeff",  # byte-order mark
    "\uffff\ufffe",  # noncharacters
    "\U0010ffff",
    "😀" * 50,
    "%00%2e%2e",
    "\\'\"`;--",
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
    "x" * 200,
]


def body(**fields: Any) -> dict[str, Any]:
    return {"action": "activate", **fields}


async def post_json(
    http: httpx.AsyncClient, path: str, text: str, headers: Headers
) -> httpx.Response:
    """Raw JSON text, so that NaN and lone surrogate escapes reach the service as sent."""
    return await http.post(
        path, content=text, headers={**headers, "Content-Type": "application/json"}
    )


@pytest.mark.parametrize("field", ["subject", "once_key", "action"])
@pytest.mark.parametrize("value", NASTY_STRINGS)
@pytest.mark.backends(POSTGRES, SQLITE)  # odd strings stored and read back
async def test_any_string_mints_a_working_link_or_is_refused(
    shop: Tenant, http: httpx.AsyncClient, field: str, value: str
) -> None:
    fields = {field: value} if field != "action" else {}
    request = {"action": value} if field == "action" else body(**fields)
    minted = await http.post("/v1/links", json=request, headers=shop.headers)
    if "\x00" in value:
        assert minted.status_code == 422, minted.text
        assert minted.json()["code"] == "validation_error"
        return
    if field == "action":
        assert minted.status_code == 422  # no such action
        return
    assert minted.status_code == 201, minted.text
    redeemed = await http.get(link_path(minted.json()))
    assert redeemed.status_code == 303
    assert "redemption_id=" in redeemed.headers["location"]


@pytest.mark.parametrize(
    "data",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        '{"x": [1, NaN]}',
        '"\\ud800"',
        '{"\\udfff": 1}',
        '["ok", {"deep": "\\ud83d"}]',
    ],
)
async def test_data_that_is_not_portable_json_is_422(
    shop: Tenant, http: httpx.AsyncClient, data: str, database_url: str
) -> None:
    response = await post_json(
        http, "/v1/links", f'{{"action": "activate", "data": {data}}}', shop.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    batch = f'{{"links": [{{"action": "activate"}}, {{"action": "activate", "data": {data}}}]}}'
    response = await post_json(http, "/v1/links/batch", batch, shop.headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["index"] == 1


@pytest.mark.parametrize(
    "data",
    [
        "\x00",
        {"\x00": "\x00"},
        [1e308, -1e-308, 2**63, -(2**63)],
        {"emoji": "😀", "rtl": "\u202e", "bom": "\ufeff"},
        "\\u0000",
    ],
)
@pytest.mark.backends(POSTGRES, SQLITE)
async def test_unusual_but_valid_data_round_trips(
    shop: Tenant, http: httpx.AsyncClient, data: Any, database_url: str
) -> None:
    minted = await http.post("/v1/links", json=body(data=data), headers=shop.headers)
    assert minted.status_code == 201, minted.text
    redeemed = await http.get(link_path(minted.json()))
    assert "redemption_id=" in redeemed.headers["location"]
    stored = await fetch(
        database_url,
        "SELECT CAST(data AS TEXT) AS data FROM redemptions WHERE link_id = $1",
        minted.json()["id"],
    )
    assert json.loads(stored[0]["data"]) == data


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/v1/admin/clients", {"id": "x", "name": "a\x00"}),
        ("PATCH", "/v1/admin/clients/shop", {"name": "\x00"}),
        (
            "PUT",
            "/v1/admin/clients/shop/actions/new",
            {"success_url": "https://shop.example/a", "label": "\x00"},
        ),
        ("PATCH", "/v1/admin/clients/shop", {"allowed_redirects": ["https://shop.example/\x00"]}),
    ],
)
async def test_nul_in_admin_bodies_is_422(
    shop: Tenant,
    http: httpx.AsyncClient,
    admin_headers: Headers,
    method: str,
    path: str,
    payload: dict[str, Any],
) -> None:
    path = path.replace("/shop", f"/{shop.id}")
    response = await http.request(method, path, json=payload, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/clients/%00"),
        ("GET", "/v1/admin/clients/shop%00"),
        ("PATCH", "/v1/admin/clients/%00"),
        ("DELETE", "/v1/admin/clients/%00"),
        ("GET", "/v1/admin/clients/shop/actions/%00"),
        ("PUT", "/v1/admin/clients/shop/actions/%00"),
        ("DELETE", "/v1/admin/clients/shop/actions/%00"),
        ("POST", "/v1/admin/clients/%00/keys"),
        ("DELETE", "/v1/admin/clients/shop/keys/%00"),
        ("GET", "/v1/admin/clients?x=%00"),
        ("POST", "/v1/links?x=%00"),
    ],
)
async def test_nul_in_paths_and_queries_is_400(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, method: str, path: str
) -> None:
    headers = admin_headers if "/admin/" in path else shop.headers
    path = path.replace("/shop", f"/{shop.id}")
    payload = {"success_url": "https://shop.example/a"} if method == "PUT" else None
    response = await http.request(method, path, json=payload, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "bad_request"


@pytest.mark.parametrize("path", ["/r/%00", "/r/abc%00def", "/r/x?y=%00"])
async def test_nul_in_a_link_is_the_invalid_page(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers


on_the_modules_loop(globals())
