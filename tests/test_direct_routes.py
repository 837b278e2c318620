"""Client routes called directly on plain requests (``service.api.direct``): the same
answers as FastAPI's, FastAPI's own handler for everything else, nothing it would do
left out (overrides, router-level dependencies)."""

from __future__ import annotations

from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response

from service.api.deps import ClientDep, StateDep, authenticated_client
from service.api.direct import ClientRoute
from service.schemas import LinkRequest
from service.state import AppState
from tests.conftest import Tenant
from tests.test_mint_api import problem_of


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths whose dependencies FastAPI solved."""
    calls: list[str] = []
    solve = fastapi.routing.solve_dependencies  # type: ignore[attr-defined]

    async def counting(*, request: Request, **kwargs: Any) -> Any:
        calls.append(request.url.path)
        return await solve(request=request, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return calls


async def test_a_plain_mint_is_answered_without_solving_dependencies(
    shop: Tenant, http: httpx.AsyncClient, solved: list[str]
) -> None:
    one = await http.post("/v1/links", json={"action": "activate"}, headers=shop.headers)
    many = await http.post(
        "/v1/links/batch", json={"links": [{"action": "activate"}] * 3}, headers=shop.headers
    )
    assert (one.status_code, many.status_code) == (201, 201)
    assert len(many.json()["links"]) == 3
    assert solved == []


@pytest.mark.parametrize(
    ("content", "content_type", "key", "status", "code"),
    [
        # FastAPI's order: a body that is not JSON is refused before the key is looked at...
        (b"{not json", "application/json", "alk_wrong", 422, "validation_error"),
        # ... a key before the body's fields, or a body that is not JSON by its type.
        (b'{"action": "activate", "max_uses": 0}', "application/json", "alk_wrong", 401, None),
        (b'{"action": "activate"}', "text/plain", "alk_wrong", 401, None),
        (b'{"action": "activate"}', "text/plain", None, 422, "validation_error"),
        (b'["activate"]', "application/json", None, 422, "validation_error"),
        (b'{"action": "activate", "max_uses": 0}', "application/json", None, 422, None),
        (b"", "application/json", None, 422, "validation_error"),
    ],
)
async def test_a_request_that_is_not_plain_is_fastapis_to_answer(
    shop: Tenant,
    http: httpx.AsyncClient,
    solved: list[str],
    content: bytes,
    content_type: str,
    key: str | None,
    status: int,
    code: str | None,
) -> None:
    headers = {"content-type": content_type, "authorization": f"Bearer {key or shop.key}"}
    response = await http.post("/v1/links", content=content, headers=headers)
    problem = await problem_of(response, status, code or response.json()["code"])
    if status == 422 and content.startswith(b"{") and b"max_uses" in content:
        assert problem["errors"][0]["loc"] == ["body", "max_uses"]  # FastAPI's own words
    if status == 401 and content_type == "application/json":
        assert solved == []  # refused by the direct call, as the dependency refuses


async def test_overridden_dependencies_are_honoured(
    app: FastAPI, shop: Tenant, http: httpx.AsyncClient, state: AppState
) -> None:
    client = await state.registry.client("shop")
    app.dependency_overrides[authenticated_client] = lambda: client
    try:
        response = await http.post("/v1/links", json={"action": "activate"})  # no key
    finally:
        app.dependency_overrides.clear()
    assert response.status_code == 201


def deny() -> None:
    raise HTTPException(403, "router-level dependency")


async def test_dependencies_added_when_including_the_router_are_honoured(
    shop: Tenant, state: AppState
) -> None:
    router = APIRouter(route_class=ClientRoute)

    @router.post("/mint")
    async def mint(
        request: LinkRequest, client: ClientDep, state: StateDep, http: Request
    ) -> Response:
        return Response(status_code=201)

    app = FastAPI()
    app.state.services = state
    app.include_router(router, dependencies=[Depends(deny)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/mint", json={"action": "activate"}, headers=shop.headers)
    assert response.status_code == 403
