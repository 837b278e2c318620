"""JSON nested deep: a 422 at any depth in every JSON route, and old deep data still readable.

Found by an attack on the service (and fixed): ``data`` nested about 955
levels deep failed minting with a 500 (Python's JSON encoder recursed past
its limit); 300 to 950 levels minted, and then ``inspect`` and the client's
whole audit-log listing answered 500 (pydantic refuses to serialize more
than about 250 levels) for as long as the audit rows were kept. A body of
100,000 levels was a 400 "error parsing the body" instead of a 422.

In-process tests share one app for the module, each with a new client
(``tests.support.shared_app``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import starlette.requests
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from service.api.json_body import JsonRoute
from service.config import Settings
from service.db import migrate
from service.json_depth import MAX_DATA_DEPTH, PARSE_DEPTH, TooDeep, depth_exceeds, refuse_deep
from service.main import create_app
from service.tokens import LinkClaims, TokenCodec
from tests.conftest import ADMIN_TOKEN, PUBLIC_BASE_URL, SECRET, Tenant, make_tenant
from tests.support.database import fetch
from tests.support.processes import running_service
from tests.support.served import ADMIN, provision_shop, service_env
from tests.support.shared_app import FIXTURES, on_the_modules_loop

backend, database_url, settings, app, state, http, shop = FIXTURES  # the module's app

Headers = dict[str, str]
DEPTHS = [MAX_DATA_DEPTH + 1, 300, 955, 2000, 100_000]


def nested(depth: int, inner: str = "") -> str:
    """JSON text of ``depth`` arrays, one inside the other."""
    return "[" * depth + inner + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def nested_value(depth: int) -> Any:
    """The same as a Python value, built without recursion."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def post_json(
    http: httpx.AsyncClient, path: str, text: str, headers: Headers, method: str = "POST"
) -> httpx.Response:
    return await http.request(
        method, path, content=text, headers={**headers, "Content-Type": "application/json"}
    )


def assert_names_data(response: httpx.Response, index: int | None = None) -> None:
    assert response.status_code == 422, response.text[:300]
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert problem["errors"], problem
    error = problem["errors"][0]
    assert "data" in error["loc"], error
    if index is not None:
        assert error["index"] == index, error
        assert index in error["loc"], error


# --- the rule --------------------------------------------------------------------------


def test_depth_is_measured_without_recursion() -> None:
    deep = nested_value(1_000_000)  # far beyond what any recursive walk survives
    assert depth_exceeds(deep, MAX_DATA_DEPTH)
    assert not depth_exceeds(nested_value(MAX_DATA_DEPTH), MAX_DATA_DEPTH)
    assert depth_exceeds(nested_value(MAX_DATA_DEPTH + 1), MAX_DATA_DEPTH)
    assert not depth_exceeds({"a": [1, {"b": "[[[[["}]}, 3)
    assert depth_exceeds({"a": [1, {"b": []}]}, 3)
    assert not depth_exceeds("scalar", 0)


def test_text_deeper_than_the_parser_may_go_is_refused_with_its_path() -> None:
    refuse_deep(nested(PARSE_DEPTH).encode())
    refuse_deep(b"[1, 2" + b", [" * 10_000)  # not JSON, but not too deep before it ends
    with pytest.raises(TooDeep):
        refuse_deep(b"[" * 10_000)  # what Python's parser would recurse into
    with pytest.raises(TooDeep) as deep:
        refuse_deep(('{"links":[{},{"action":"x","data":' + nested(100_000) + "}]}").encode())
    assert deep.value.path[:3] == ["links", 1, "data"]
    with pytest.raises(TooDeep) as deep:
        refuse_deep(('{"é€😀":"[[[",\n"data":\n' + nested_objects(5000) + "}").encode())
    assert deep.value.path[:3] == ["data", "a", "a"]


def test_the_parser_still_stops_where_the_guard_expects() -> None:
    """Past the bracket count, jiter decides: if its limit moved, this says so."""
    siblings = "[]," * PARSE_DEPTH
    refuse_deep(f"[{siblings}{nested(PARSE_DEPTH - 1)}]".encode())
    with pytest.raises(TooDeep):
        refuse_deep(f"[{siblings}{nested(PARSE_DEPTH)}]".encode())


def test_every_route_with_a_body_measures_it_first(app: FastAPI) -> None:
    with_body = [
        route.original_route
        for route in iter_route_contexts(app.routes)
        if getattr(route, "body_field", None) is not None
    ]
    assert len(with_body) >= 7
    assert [getattr(r, "path", r) for r in with_body if not isinstance(r, JsonRoute)] == []


async def test_a_json_body_is_parsed_once_by_the_depth_guard(
    shop: Tenant, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard parses the body (jiter, with its depth limit) and leaves the result where
    Starlette's ``Request.json`` keeps it, a private attribute: if an upgrade renamed it,
    Starlette would parse every body a second time with ``json.loads``, and this fails."""

    def second_parse(*args: object, **kwargs: object) -> object:
        raise AssertionError("Starlette parsed a body the guard had already parsed")

    # Only Starlette's own name for the json module (``Request.json`` uses nothing else).
    monkeypatch.setattr(starlette.requests, "json", SimpleNamespace(loads=second_parse))
    minted = await post_json(http, "/v1/links", '{"action": "activate"}', shop.headers)
    assert minted.status_code == 201, minted.text


# --- minting ---------------------------------------------------------------------------


async def test_data_of_32_levels_mints(shop: Tenant, http: httpx.AsyncClient) -> None:
    text = f'{{"action": "activate", "data": {nested(MAX_DATA_DEPTH, "1")}}}'
    minted = await post_json(http, "/v1/links", text, shop.headers)
    assert minted.status_code == 201, minted.text
    inspected = await http.post(
        "/v1/links/inspect", json={"token": minted.json()["token"]}, headers=shop.headers
    )
    assert inspected.json()["link"]["data"] == json.loads(nested(MAX_DATA_DEPTH, "1"))


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("shape", ["arrays", "objects"])
async def test_deeper_data_is_422_naming_it(
    shop: Tenant, http: httpx.AsyncClient, depth: int, shape: str
) -> None:
    data = nested(depth) if shape == "arrays" else nested_objects(depth)
    response = await post_json(
        http, "/v1/links", f'{{"action": "activate", "data": {data}}}', shop.headers
    )
    assert_names_data(response)
    data_first = await post_json(
        http, "/v1/links", f'{{"data": {data}, "action": "activate"}}', shop.headers
    )
    assert_names_data(data_first)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_deeper_data_in_a_batch_is_422_naming_the_item(
    shop: Tenant, http: httpx.AsyncClient, depth: int
) -> None:
    body = (
        '{"links": [{"action": "activate"}, {"action": "activate"}, '
        f'{{"action": "activate", "data": {nested(depth)}}}, {{"action": "activate"}}]}}'
    )
    assert_names_data(await post_json(http, "/v1/links/batch", body, shop.headers), index=2)


# --- every other JSON route ------------------------------------------------------------


@pytest.mark.parametrize("depth", [300, 955, 100_000])
@pytest.mark.parametrize(
    ("method", "path", "template", "admin"),
    [
        ("POST", "/v1/links/inspect", '{"token": %s}', False),
        ("POST", "/v1/revocations", '{"subject": "42", "action": %s}', False),
        ("POST", "/v1/admin/clients", '{"id": "x", "name": "x", "allowed_redirects": %s}', True),
        ("PATCH", "/v1/admin/clients/shop", '{"name": %s}', True),
        ("PUT", "/v1/admin/clients/shop/actions/x", '{"success_url": %s}', True),
        ("POST", "/v1/links", "%s", False),
    ],
)
async def test_deep_bodies_are_422_on_every_json_route(
    shop: Tenant,
    http: httpx.AsyncClient,
    admin_headers: Headers,
    depth: int,
    method: str,
    path: str,
    template: str,
    admin: bool,
) -> None:
    headers = admin_headers if admin else shop.headers
    path = path.replace("/shop", f"/{shop.id}")
    response = await post_json(http, path, template % nested(depth), headers, method)
    assert response.status_code == 422, response.text[:300]
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_error"


async def test_a_deep_body_over_the_size_limit_is_413(
    shop: Tenant, http: httpx.AsyncClient
) -> None:
    text = f'{{"action": "activate", "data": {nested(600_000)}}}'
    response = await post_json(http, "/v1/links", text, shop.headers)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


# --- data minted before the limit ------------------------------------------------------


async def legacy_token(client_id: str, depth: int) -> str:
    """A link of the client minted before the limit existed, with deep ``data``.

    Signed on a fresh thread, whose stack leaves room for the encoder's recursion.
    """
    codec = TokenCodec([SECRET.encode()])
    claims = LinkClaims(
        link_id=codec.mint_link_id(client_id),
        client_id=client_id,
        action="activate",
        subject="legacy",
        data=nested_value(depth),
        issued_at_us=0,
        expires_at=4_000_000_000,
        max_uses=1,
    )
    return await asyncio.to_thread(codec.sign_link, claims)


@pytest.mark.parametrize("depth", [40, 300, 950])
async def test_inspecting_an_old_link_with_deep_data_is_no_500(
    shop: Tenant, http: httpx.AsyncClient, depth: int
) -> None:
    token = await legacy_token(shop.id, depth)
    response = await http.post("/v1/links/inspect", json={"token": token}, headers=shop.headers)
    assert response.status_code == 200, response.text[:300]
    link = response.json()["link"]
    if link is not None:  # a token too deep to decode here is "invalid", never a 500
        assert link["subject"] == "legacy"
        assert link["data"] is None  # deeper than the API shows


@pytest.mark.parametrize("depth", [40, 300, 950, 5000])
async def test_the_audit_log_lists_old_deep_data_as_null(
    shop: Tenant, http: httpx.AsyncClient, database_url: str, depth: int
) -> None:
    fresh = await shop.mint(subject="fresh", data={"keep": [1, 2]})
    assert (await http.get("/r/" + fresh["token"])).status_code == 303
    old = f"old-{shop.id}"  # the module's database is shared: ids of this test's own
    await fetch(
        database_url,
        "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, subject, data,"
        " use, redeemed_at) VALUES ($2 || '.1', $3, $2, 'l:' || $2, 'activate', 'legacy',"
        " $1::json, 1, now() - interval '1 day')",
        nested(depth),
        old,
        shop.id,
    )
    listed = await http.get("/v1/redemptions", headers=shop.headers)
    assert listed.status_code == 200, listed.text[:300]
    data = {item["subject"]: item["data"] for item in listed.json()["items"]}
    assert data == {"fresh": {"keep": [1, 2]}, "legacy": None}
    one = await http.get(f"/v1/redemptions/{old}.1", headers=shop.headers)
    assert one.status_code == 200, one.text[:300]
    assert one.json()["data"] is None


async def test_the_audit_log_on_sqlite_lists_old_deep_data_as_null(tmp_path: Path) -> None:
    path = tmp_path / "links.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{path}",
        secret_keys=SECRET,
        admin_token=ADMIN_TOKEN,
        public_base_url=PUBLIC_BASE_URL,
    )
    await asyncio.to_thread(migrate, settings)  # alembic runs its own event loop
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            shop = await make_tenant(http, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, "shop")
            with sqlite3.connect(path) as db:
                db.execute(
                    "INSERT INTO redemptions (id, client_id, link_id, claim_key, action,"
                    " subject, data, use, redeemed_at) VALUES ('old.1', 'shop', 'old', 'l:old',"
                    " 'activate', 'legacy', ?, 1, '2026-01-01 00:00:00.000000')",
                    (nested(5000),),
                )
            listed = await http.get("/v1/redemptions", headers=shop.headers)
    assert listed.status_code == 200, listed.text[:300]
    assert [item["data"] for item in listed.json()["items"]] == [None]


# --- a real process --------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_process_answers_422_at_every_depth(database_url: str, tmp_path: Path) -> None:
    """The 500 at 955 levels needs the shallow stack of a real uvicorn worker to show."""
    with (
        running_service(service_env(database_url, 2), tmp_path) as service,
        httpx.Client(base_url=service.base_url, timeout=30) as http,
    ):
        headers = asyncio.run(_provision(service.base_url))
        for depth in [MAX_DATA_DEPTH + 1, 300, 700, 900, 955, 990, 2000, 100_000]:
            text = f'{{"action": "go", "data": {nested(depth)}}}'
            response = http.post(
                "/v1/links", content=text, headers={**headers, "Content-Type": "application/json"}
            )
            assert_names_data(response)
            batch = (
                f'{{"links": [{{"action": "go"}}, {{"action": "go", "data": {nested(depth)}}}]}}'
            )
            response = http.post(
                "/v1/links/batch",
                content=batch,
                headers={**headers, "Content-Type": "application/json"},
            )
            assert_names_data(response, index=1)
        deep_admin = f'{{"id": "x", "name": {nested(955)}}}'
        response = http.post(
            "/v1/admin/clients",
            content=deep_admin,
            headers={**ADMIN, "Content-Type": "application/json"},
        )
        assert response.status_code == 422


async def _provision(base_url: str) -> Headers:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        return await provision_shop(http)


on_the_modules_loop(globals())
