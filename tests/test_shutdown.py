"""SIGTERM in the middle of a burst of redemptions: nothing answered is lost, and the
process (supervisor and two workers, as the image runs it) exits 0 in bounded time."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import SECRET
from tests.support.database import fetch
from tests.support.processes import ServiceProcess, running_service
from tests.support.served import provision_shop, service_env

pytestmark = pytest.mark.slow
BURST = 80
LATE = 20  # of the BURST, sent right after SIGTERM: answered (and kept) or refused
SIGNAL_AFTER = 10  # responses received before SIGTERM is sent


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_service(service_env(database_url, 3), tmp_path, "--workers", "2") as process:
        yield process


async def prepare(http: httpx.AsyncClient) -> list[str]:
    """``BURST`` single-use links, minted before the burst."""
    headers = await provision_shop(http)
    batch = await http.post(
        "/v1/links/batch",
        json={"links": [{"action": "go"}] * BURST},
        headers=headers,
    )
    assert batch.status_code == 201
    return [str(link["token"]) for link in batch.json()["links"]]


async def test_sigterm_during_a_burst_keeps_every_answered_redemption(
    service: ServiceProcess, database_url: str
) -> None:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        tokens = await prepare(http)

    answered: asyncio.Queue[None] = asyncio.Queue()
    limits = httpx.Limits(max_connections=BURST)

    async def redeem(burst: httpx.AsyncClient, token: str) -> httpx.Response | Exception:
        try:
            return await burst.get("/r/" + token)
        except httpx.HTTPError as exc:  # refused or cut: no answer, no promise
            return exc
        finally:
            answered.put_nowait(None)

    async with httpx.AsyncClient(base_url=service.base_url, limits=limits, timeout=30) as burst:
        tasks = [asyncio.create_task(redeem(burst, token)) for token in tokens[LATE:]]
        for _ in range(SIGNAL_AFTER):
            await answered.get()
        service.process.send_signal(signal.SIGTERM)
        tasks += [asyncio.create_task(redeem(burst, token)) for token in tokens[:LATE]]
        results = await asyncio.gather(*tasks)
    exit_code = await asyncio.to_thread(service.process.wait, 10)  # raises if it takes longer
    assert exit_code == 0
    log = service.log()
    assert '"msg":"stopped"' in log
    assert "Application shutdown complete." in log

    responses = [r for r in results if isinstance(r, httpx.Response)]
    assert len(responses) >= SIGNAL_AFTER
    rows = await fetch(database_url, "SELECT id, link_id FROM redemptions")
    recorded = {row["id"] for row in rows}
    assert len(recorded) == len({row["link_id"] for row in rows}), "at most one use per link"
    answered_ids = set()
    for response in responses:
        assert response.status_code in (303, 503), response.status_code
        if response.status_code == 303:
            query = parse_qs(urlsplit(response.headers["location"]).query)
            assert "redemption_id" in query, query
            answered_ids.add(query["redemption_id"][0])
    assert answered_ids <= recorded, "every success that was answered was kept"
    assert len(answered_ids) == len([r for r in responses if r.status_code == 303])


def test_sigterm_when_idle_exits_zero(database_url: str, tmp_path: Path) -> None:
    """One process (uvicorn re-raises SIGTERM after its graceful shutdown); a supervisor
    and its workers: the burst above, which ends the same way."""
    env = {"DATABASE_URL": database_url, "SECRET_KEYS": SECRET, "DATABASE_POOL_SIZE": "2"}
    with running_service(env, tmp_path, "--workers", "1") as service:
        service.process.send_signal(signal.SIGTERM)
        try:
            assert service.process.wait(timeout=10) == 0
        except subprocess.TimeoutExpired:
            pytest.fail("did not stop within 10 s")
    log = service.log()
    assert '"msg":"stopped"' in log
    assert "Application shutdown complete." in log
