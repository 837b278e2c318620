"""``GET /r/…`` through the fast path answers exactly as the FastAPI route it stands in front of.

The route stays for the OpenAPI document and for apps mounted under a root
path; the same requests are made through both and their answers compared.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from service.api import redirect
from service.api.front import Front
from service.config import Settings
from service.confirm import Gate
from service.main import create_app
from tests.conftest import Tenant, link_path
from tests.support.database import POSTGRES, SQLITE

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

NONCE = re.compile(r"nonce-[A-Za-z0-9_-]+|nonce=\"[^\"]+\"|value=\"[^\"]+\"|[0-9a-f]{16}")


@pytest.fixture
async def routed(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The same app without the fast path: every link request goes through the router."""
    application = create_app(settings)
    front = [m for m in application.user_middleware if cast(object, m.cls) is Front]
    assert len(front) == 1
    front[0].kwargs["link_fast_path"] = False
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


def shape(response: httpx.Response) -> dict[str, Any]:
    """Everything but what differs by design between two answers (ids, nonces)."""
    headers = {k: NONCE.sub("…", v) for k, v in response.headers.items() if k != "x-request-id"}
    location = headers.pop("location", None)
    return {
        "status": response.status_code,
        "headers": headers,
        "location": location and re.sub(r"=[A-Za-z0-9_.-]{16,}", "=…", location),
        "body": NONCE.sub("…", response.text),
    }


async def test_every_outcome_answers_alike_through_both(
    app: FastAPI,
    http: httpx.AsyncClient,
    routed: httpx.AsyncClient,
    shop: Tenant,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The FastAPI route reads the gate through gate_of; the fast path never does,
    # which tells a GET it answered from one it only passed on to the router.
    gate_lookups = 0
    real_gate_of = redirect.gate_of

    def counted_gate_of(request: Request) -> Gate:
        nonlocal gate_lookups
        gate_lookups += 1
        return real_gate_of(request)

    monkeypatch.setattr(redirect, "gate_of", counted_gate_of)

    async def get_fast(path: str) -> httpx.Response:
        before = gate_lookups
        response = await http.get(path)
        assert gate_lookups == before, f"{path} went through the router"
        return response

    async def get_routed(path: str) -> httpx.Response:
        before = gate_lookups
        response = await routed.get(path)
        assert gate_lookups == before + 1, f"{path} did not go through the router"
        return response

    await shop.put_action("confirmed", admin_headers, confirm="page")
    await shop.put_action("nowhere", admin_headers, failure_url=None)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("first use", {}),
        ("expired", {"expires_in": 1}),
        ("confirm page", {"action": "confirmed"}),
    ]
    for label, fields in cases:
        fast_link, routed_link = await shop.mint(**fields), await shop.mint(**fields)
        if label == "expired":
            await asyncio.sleep(2.1)
        fast = await get_fast(link_path(fast_link))
        slow = await get_routed(link_path(routed_link))
        assert shape(fast) == shape(slow), label
        again_fast = await get_fast(link_path(fast_link))
        again_slow = await get_routed(link_path(routed_link))
        assert shape(again_fast) == shape(again_slow), label + ", again"
    for path in ("/r/", "/r/not-a-token", "/r/a/b?c=d", "/r/a%0Ab", "/r/" + "x" * 5000):
        fast, slow = await get_fast(path), await routed.get(path)
        assert shape(fast) == shape(slow), path
    used = await shop.mint(action="nowhere")
    await get_fast(link_path(used))
    fast, slow = await get_fast(link_path(used)), await get_routed(link_path(used))
    assert shape(fast) == shape(slow)
    assert fast.status_code == 410


def test_the_route_takes_nothing_the_fast_path_does_not_give() -> None:
    """The fast path calls ``open_answer`` with the path's token and nothing else, so the
    route must need nothing else either: no dependency (its own, its router's or the
    app's), no query, header, cookie or body parameter. A route that gained one would
    behave differently behind the fast path, which skips FastAPI altogether."""
    app = create_app(Settings(database_url="sqlite+aiosqlite:///unused.db"))
    # The route as the app serves it: with its router's and the app's dependencies.
    [route] = [
        r
        for r in iter_route_contexts(app.routes)
        if r.path == redirect.LINK_PATH and "GET" in (r.methods or ())
    ]
    assert route.endpoint is redirect.open_link
    dependant: Dependant = route.dependant
    assert [p.name for p in dependant.path_params] == ["token"]
    assert dependant.request_param_name == "request"
    assert dependant.dependencies == []
    assert dependant.query_params == dependant.header_params == []
    assert dependant.cookie_params == dependant.body_params == []
    assert app.router.dependencies == []
