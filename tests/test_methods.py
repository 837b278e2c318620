"""A method a path does not answer: 405, and ``Allow`` names every method it does."""

from __future__ import annotations

import httpx

from service.pages import PAGES


async def test_allow_lists_the_methods_of_every_route_at_the_path(http: httpx.AsyncClient) -> None:
    # GET and DELETE /v1/links/{link_id} are two routes; Starlette names only the first.
    response = await http.request("OPTIONS", "/v1/links/some-id")
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
