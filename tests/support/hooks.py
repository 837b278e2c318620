"""Helpers for webhook tests: a receiver per test, and reading the outbox directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx

from tests.support.database import fetch


def query_of(response: httpx.Response) -> dict[str, list[str]]:
    """The query of a 303's Location."""
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def deliveries(database_url: str) -> dict[str, asyncpg.Record]:
    rows = await fetch(database_url, "SELECT * FROM deliveries")
    return {row["redemption_id"]: row for row in rows}


async def all_delivered(database_url: str, expected: int) -> bool:
    rows = await fetch(
        database_url, "SELECT count(*) AS n FROM deliveries WHERE status = 'delivered'"
    )
    return int(rows[0]["n"]) >= expected
