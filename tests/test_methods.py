"""A method a path does not answer: 405, and ``Allow`` names every method it does.

On PostgreSQL only: a 405 is decided by the routes alone. Storage is tested on both
databases by ``tests/test_store.py`` and the suites marked ``backends``.
"""

from __future__ import annotations

import httpx

from service.pages import PAGES
from tests.conftest import Tenant


async def test_allow_lists_the_methods_of_every_route_at_the_path(http: httpx.AsyncClient) -> None:
    # GET and DELETE /v1/links/{link_id} are two routes; Starlette names only the first.
    response = await http.request("OPTIONS", "/v1/links/" + "A" * 20)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["allow"] == "DELETE, GET"


async def test_links_answer_405_with_a_page(http: httpx.AsyncClient) -> None:
    response = await http.request("PUT", "/r/some.token")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert PAGES["method_not_allowed"].title in response.text


async def test_static_paths_beside_link_ids_are_their_own_resources(
    http: httpx.AsyncClient, shop: Tenant
) -> None:
    """``/v1/links/batch`` is not the link id "batch": a GET there is a 405, not a lookup."""
    for path in ("/v1/links/batch", "/v1/links/inspect"):
        for method in ("GET", "DELETE", "OPTIONS"):
            response = await http.request(method, path, headers=shop.headers)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == "POST"
    # Whatever else is no link id stays a 404, with or without a key.
    for headers in (shop.headers, {}):
        assert (await http.get("/v1/links/not-a-link-id", headers=headers)).status_code == 404
