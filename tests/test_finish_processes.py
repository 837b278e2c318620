"""Finishing the flow across real processes: ``serve --workers 2`` and ``serve`` on PostgreSQL.

Exchanges of one code, typed codes racing the link's URL, wrong codes spread
over both workers, and a superseding mint racing redemptions of the link it
supersedes. Sizes are small in CI and the issue's with ``HEAVY_SCALE=full``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.database import (
    fetch,
    module_database_url,  # noqa: F401 (the module's database_url)
)
from tests.support.processes import ServiceProcess, running_service
from tests.support.scale import scaled
from tests.support.served import provision_shop, service_env

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

EXCHANGES = scaled(30, 200)
TYPED = scaled(30, 200)
FOLLOWED = scaled(30, 200)
WRONG = scaled(20, 100)
RACING = scaled(30, 200)


@pytest.fixture(scope="module")
def services(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    """``serve --workers 2`` and a second ``serve`` beside it, started at once.

    Requests alternate between the two, so "across processes" does not depend
    on how the kernel spreads connections over one server's workers.
    """
    log_dir = tmp_path_factory.mktemp("finish")
    env = service_env(database_url, 5)
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        starting = [
            pool.submit(stack.enter_context, running_service(env, log_dir, *args))
            for args in (("--workers", "2"), ())
        ]
        yield [started.result() for started in starting]


@pytest.fixture
async def http(services: list[ServiceProcess]) -> AsyncIterator[Spread]:
    # Idle connections are given up well before the server's keep-alive timeout (5 s):
    # reusing one the server is closing at that moment is a ReadError, not an answer.
    limits = httpx.Limits(max_connections=400, keepalive_expiry=2.0)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=s.base_url, limits=limits, timeout=60)
            )
            for s in services
        ]
        yield Spread(clients)


class Spread:
    """One client per service process; each request goes to the next process in turn."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self._turns = itertools.cycle(clients)

    def next(self) -> httpx.AsyncClient:
        return next(self._turns)

    def get(self, url: str) -> Coroutine[Any, Any, httpx.Response]:
        return self.next().get(url)

    def post(
        self, url: str, json: Any, headers: dict[str, str]
    ) -> Coroutine[Any, Any, httpx.Response]:
        return self.next().post(url, json=json, headers=headers)


@pytest.fixture
async def headers(http: Spread, request: pytest.FixtureRequest) -> dict[str, str]:
    """A client of this test's own, with action ``go`` (single use) with typed codes."""
    client_id = request.node.name.removeprefix("test_")[:40].replace("_", "-")
    return await provision_shop(http.next(), client_id, code=True)


async def mint(http: Spread, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await http.post("/v1/links", json={"action": "go", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    link: dict[str, Any] = response.json()
    return link


def outcome(response: httpx.Response) -> str:
    """``success`` or the problem's / redirect's word; a 5xx names its status."""
    if response.status_code >= 500:
        return f"status {response.status_code}"
    if response.status_code == 303:
        query = parse_qs(urlsplit(response.headers["location"]).query)
        return "success" if "redemption_id" in query else query["error"][0]
    if response.status_code == 200:
        return "success"
    code: str = response.json()["code"]
    return code


async def test_one_code_is_exchanged_once_and_a_typed_code_races_the_url(
    http: Spread, headers: dict[str, str], database_url: str
) -> None:
    # Many concurrent exchanges of one success's code: exactly one 200.
    link = await mint(http, headers)
    landed = await http.get("/r/" + link["token"])
    code = parse_qs(urlsplit(landed.headers["location"]).query)["code"][0]
    exchanges = await asyncio.gather(
        *(
            http.post("/v1/redemptions/exchange", json={"code": code}, headers=headers)
            for _ in range(EXCHANGES)
        )
    )
    assert Counter(map(outcome, exchanges)) == Counter({"success": 1, "code_used": EXCHANGES - 1})

    # A single-use link, redeemed by typed code and by its URL at once: one success.
    raced = await mint(http, headers, subject="42")
    path = "/r/" + raced["token"]
    typed = {"token": raced["token"], "code": raced["code"]}
    requests = [
        http.post("/v1/links/redeem", json=typed, headers=headers) for _ in range(TYPED)
    ] + [http.get(path) for _ in range(FOLLOWED)]
    outcomes = Counter(map(outcome, await asyncio.gather(*requests)))
    assert outcomes == Counter({"success": 1, "used": TYPED + FOLLOWED - 1}), outcomes
    rows = await fetch(database_url, "SELECT via FROM redemptions WHERE link_id = $1", raced["id"])
    assert len(rows) == 1


async def test_wrong_codes_lock_across_processes_and_supersede_races_redemptions(
    http: Spread, headers: dict[str, str], services: list[ServiceProcess]
) -> None:
    # Wrong codes spread over both workers: five are counted, then the code is locked.
    link = await mint(http, headers)
    wrong = f"{(int(link['code']) + 1) % 1_000_000:06d}"
    body = {"token": link["token"], "code": wrong}
    answers = await asyncio.gather(
        *(http.post("/v1/links/redeem", json=body, headers=headers) for _ in range(WRONG))
    )
    assert Counter(map(outcome, answers)) == Counter({"wrong_code": 5, "code_locked": WRONG - 5})
    left = sorted(r.json()["attempts_left"] for r in answers if r.status_code == 422)
    assert left == [0, 1, 2, 3, 4]
    right = {"token": link["token"], "code": link["code"]}
    locked = await http.post("/v1/links/redeem", json=right, headers=headers)
    assert outcome(locked) == "code_locked"
    assert outcome(await http.get("/r/" + link["token"])) == "success"  # the URL still works

    # A superseding mint racing redemptions of the link it supersedes.
    old = await mint(http, headers, subject="7", max_uses=1_000_000)
    old_path = "/r/" + old["token"]

    async def superseding() -> dict[str, Any]:
        await asyncio.sleep(0.05)  # lands among the redemptions
        return await mint(http, headers, subject="7", supersede=True)

    followed, newest = await asyncio.gather(
        asyncio.gather(*(http.get(old_path) for _ in range(RACING))), superseding()
    )
    before = Counter(map(outcome, followed))
    assert set(before) <= {"success", "revoked"}, before
    after = await asyncio.gather(*(http.get(old_path) for _ in range(RACING)))
    assert Counter(map(outcome, after)) == Counter({"revoked": RACING})
    assert outcome(await http.get("/r/" + newest["token"])) == "success"
    for service in services:
        assert "Traceback" not in service.log()
