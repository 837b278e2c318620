"""Exactly-once with real processes: ``serve --workers 2`` and many concurrent requests."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.database import fetch
from tests.support.processes import ServiceProcess, running_service
from tests.support.served import provision_shop, service_env

pytestmark = pytest.mark.slow

AT_ONCE = 100  # requests of one link (or once key) in flight together, over both workers


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_service(service_env(database_url, 5), tmp_path, "--workers", "2") as process:
        yield process


async def hammer(http: httpx.AsyncClient, urls: list[str]) -> Counter[str]:
    async def one(url: str) -> str:
        response = await http.get(url)
        if response.status_code >= 500:
            return f"status {response.status_code}"
        assert response.status_code == 303, response.text
        query = parse_qs(urlsplit(response.headers["location"]).query)
        return "success" if "redemption_id" in query else query["error"][0]

    return Counter(await asyncio.gather(*(one(url) for url in urls)))


async def test_exactly_once_across_two_workers(service: ServiceProcess, database_url: str) -> None:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=service.base_url, limits=limits, timeout=30) as http:
        headers = await provision_shop(http)

        async def mint(**fields: object) -> str:
            body = {"action": "go", **fields}
            response = await http.post("/v1/links", json=body, headers=headers)
            assert response.status_code == 201, response.text
            return "/r/" + str(response.json()["token"])

        single = await mint()
        assert await hammer(http, [single] * AT_ONCE) == Counter(
            {"success": 1, "used": AT_ONCE - 1}
        )

        five = await mint(max_uses=5)
        assert await hammer(http, [five] * AT_ONCE) == Counter({"success": 5, "used": AT_ONCE - 5})

        shared = [await mint(once_key="voucher:9", max_uses=2) for _ in range(4)]
        assert await hammer(http, shared * (AT_ONCE // 4)) == Counter(
            {"success": 2, "used": AT_ONCE - 2}
        )

    rows = await fetch(database_url, "SELECT claim_key, count(*) AS n FROM redemptions GROUP BY 1")
    assert sorted(r["n"] for r in rows) == [1, 2, 5]
