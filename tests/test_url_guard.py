"""A NUL character anywhere in a URL is refused up front: 400, never a 500 from PostgreSQL.

On PostgreSQL only: a NUL is refused before any handler, let alone a database, is
reached. Storage is tested on both databases by ``tests/test_store.py`` and the suites
marked ``backends``.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Tenant
from tests.support.database import fetch


@pytest.mark.parametrize(
    "path",
    [
        "/v1/links/%00",
        "/v1/links/abc%00def",
        "/v1/redemptions/a%00b",
        "/v1/redemptions?subject=a%00b",
        "/v1/admin/clients/sh%00p",
    ],
)
async def test_api_answers_problem_400(shop: Tenant, http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path, headers=shop.headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "bad_request"


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
async def test_links_answer_the_invalid_page(
    shop: Tenant, http: httpx.AsyncClient, method: str, database_url: str
) -> None:
    link = await shop.mint()
    response = await http.request(method, f"/r/{link['token']}%00")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert await fetch(database_url, "SELECT * FROM claims") == []
