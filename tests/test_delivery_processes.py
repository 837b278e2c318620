"""Delivery with real service processes: many dispatchers, and one killed mid-delivery."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.config import Settings
from service.main import create_app
from tests.conftest import ADMIN_TOKEN, SECRET, SHOP_ORIGIN, link_path, make_tenant
from tests.support.database import fetch
from tests.support.hooks import all_delivered, eventually, query_of
from tests.support.processes import REPO_ROOT, free_port, running_service
from tests.support.proxy import TcpProxy
from tests.support.receiver import NEVER, Answer, Received, Receiver
from tests.support.scale import scaled
from tests.support.served import service_env

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REDEMPTIONS = scaled(80, 200)  # delivered by two processes' dispatchers
# Dispatchers look at the outbox every 0.025 to 0.05 s when nothing wakes them.
POLL = {"WEBHOOK_POLL_INTERVAL": "0.05"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(shutdown_grace=0).up()  # requests left hanging are not waited for
    yield receiver
    receiver.down()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy().start()
    yield proxy
    proxy.close()


@contextmanager
def running_dispatcher(env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``action-links dispatcher`` as operators run it beside the service."""
    log_path = log_dir / "dispatcher.log"
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "dispatcher"],
            env=full_env,
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def set_up_shop(http: httpx.AsyncClient, webhook_url: str) -> dict[str, str]:
    body = {
        "id": "shop",
        "name": "Shop",
        "webhook_url": webhook_url,
        "allowed_redirects": [f"{SHOP_ORIGIN}/"],
    }
    assert (await http.post("/v1/admin/clients", json=body, headers=ADMIN)).status_code == 201
    action = {"success_url": f"{SHOP_ORIGIN}/ok", "delivery": "async"}
    put = await http.put("/v1/admin/clients/shop/actions/go", json=action, headers=ADMIN)
    assert put.status_code == 200, put.text
    key = (await http.post("/v1/admin/clients/shop/keys", headers=ADMIN)).json()["key"]
    return {"Authorization": f"Bearer {key}"}


async def mint(http: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[str]:
    body = {"links": [{"action": "go"} for _ in range(count)]}
    response = await http.post("/v1/links/batch", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return ["/r/" + link["token"] for link in response.json()["links"]]


async def redeem_all(http: httpx.AsyncClient, paths: list[str], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str) -> None:
        async with gate:
            assert "redemption_id" in query_of(await http.get(path))

    await asyncio.gather(*(one(path) for path in paths))


def by_redemption(received: list[Received], secret: str) -> dict[str, list[Received]]:
    """Every request verified, grouped by the redemption it reports."""
    groups: dict[str, list[Received]] = defaultdict(list)
    for request in received:
        groups[request.verify(secret)["data"]["redemption_id"]].append(request)
    return groups


def half_fail_first(request: Received, seen: int) -> Answer:
    """The first attempt of every other message (by its id) fails."""
    odd = hashlib.sha256(request.webhook_id.encode()).digest()[0] % 2
    return Answer(503) if seen == 0 and odd else Answer(200)


async def test_two_processes_deliver_every_redemption(
    database_url: str, tmp_path: Path, receiver: Receiver, record_property: Callable[..., None]
) -> None:
    receiver.script = half_fail_first
    env = service_env(
        database_url,
        5,
        CACHE_TTL="1",
        WEBHOOK_TIMEOUT="5",
        WEBHOOK_RETRY_SCHEDULE="0.1,0.5,1,2,2,2,5,5,5",
        **POLL,
    )
    with running_service(env, tmp_path, "--workers", "2") as service:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
            headers = await set_up_shop(http, receiver.url)
            paths = await mint(http, headers, REDEMPTIONS)
            await redeem_all(http, paths, concurrency=20)
            await eventually(lambda: all_delivered(database_url, REDEMPTIONS), timeout=90)
        secret = await webhook_secret(database_url)

    redemptions = {r["id"] for r in await fetch(database_url, "SELECT id FROM redemptions")}
    assert len(redemptions) == REDEMPTIONS
    groups = by_redemption(receiver.received, secret)
    assert set(groups) == redemptions  # none lost, none invented
    ids = set()
    duplicates = 0
    for requests in groups.values():
        assert len({r.webhook_id for r in requests}) == 1  # duplicates share their id
        assert len({r.body for r in requests}) == 1
        accepted = sum(1 for r in requests if r.answer is not None and r.answer.status == 200)
        assert accepted >= 1
        duplicates += accepted - 1
        ids.add(requests[0].webhook_id)
    assert len(ids) == REDEMPTIONS
    failed_first = sum(1 for g in groups.values() if g[0].answer and g[0].answer.status == 503)
    record_property("duplicate_deliveries", duplicates)
    record_property("failed_first_attempts", failed_first)
    log.info(
        "%d redemptions: %d failed first attempts, %d duplicates",
        REDEMPTIONS,
        failed_first,
        duplicates,
    )
    # Half of them by their id's hash: binomial, the bounds 4.5 standard deviations
    # away at 80 (7 at 200).
    assert REDEMPTIONS / 4 < failed_first < 3 * REDEMPTIONS / 4


async def webhook_secret(database_url: str) -> str:
    rows = await fetch(database_url, "SELECT webhook_secret FROM clients WHERE id = 'shop'")
    return str(rows[0]["webhook_secret"])


async def test_a_killed_process_loses_nothing(
    database_url: str, tmp_path: Path, receiver: Receiver, proxy: TcpProxy
) -> None:
    receiver.answer(Answer(503))
    env = service_env(
        database_url,
        5,
        CACHE_TTL="1",
        WEBHOOK_TIMEOUT="1",  # the lease: 1 s + 1 s of grace (the least allowed)
        WEBHOOK_LEASE_GRACE="1",
        WEBHOOK_RETRY_SCHEDULE="60,60,60",  # no retry is due unless the test says so
        **POLL,
    )
    # The survivor starts beside the doomed process, and reaches the database through
    # a proxy that is cut until the doomed one is dead: it is polling all the while
    # the dead process's leases run, and must still wait for them to expire.
    survivor_env = {**env, "DATABASE_URL": proxy.url_for(database_url)}
    with (
        running_dispatcher(survivor_env, tmp_path) as survivor,
        running_service(env, tmp_path) as doomed,
    ):

        async def survivor_dispatching() -> bool:
            return "dispatching webhooks" in (tmp_path / "dispatcher.log").read_text()

        await eventually(survivor_dispatching, what="the survivor to start")
        proxy.cut()
        async with httpx.AsyncClient(base_url=doomed.base_url, timeout=30) as http:
            headers = await set_up_shop(http, receiver.url)
            await redeem_all(http, await mint(http, headers, 5), concurrency=5)

        async def all_waiting() -> bool:
            query = (
                "SELECT count(*) AS n FROM deliveries WHERE attempts > 0 AND leased_until IS NULL"
            )
            return int((await fetch(database_url, query))[0]["n"]) == 5

        async def all_leased() -> bool:
            query = "SELECT count(*) AS n FROM deliveries WHERE leased_until > now()"
            return int((await fetch(database_url, query))[0]["n"]) == 5

        # Every job failed once (inline, or its first retry) and waits a minute. Now the
        # receiver hangs, and all five are due at once: the doomed dispatcher leases
        # them in one round and holds them, mid-delivery, for the attempt's 1 s.
        await eventually(all_waiting, what="every job to wait for its retry")
        receiver.answer(Answer(delay=NEVER))
        await fetch(database_url, "UPDATE deliveries SET next_attempt_at = now() RETURNING 1")
        await eventually(all_leased, what="the doomed dispatcher to lease every job")
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
        leases = {
            r["redemption_id"]: r["leased_until"].timestamp()
            for r in await fetch(database_url, "SELECT redemption_id, leased_until FROM deliveries")
        }

        receiver.answer(Answer(200))
        started = len(receiver.received)
        proxy.restore()
        await eventually(lambda: all_delivered(database_url, 5), timeout=60)
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=15) == 0

    secret = await webhook_secret(database_url)
    groups = by_redemption(receiver.received[started:], secret)
    assert set(groups) == set(leases)
    for redemption_id, requests in groups.items():
        # Nobody touched a job before the dead process's lease on it had expired.
        assert min(r.at for r in requests) >= leases[redemption_id] - 0.05
    earlier = by_redemption(receiver.received[:started], secret)
    for redemption_id, requests in groups.items():
        assert {r.webhook_id for r in earlier[redemption_id]} == {requests[0].webhook_id}
    assert time.time() > max(leases.values())


async def test_the_standalone_dispatcher_logs_json_lines_and_no_secret(
    settings: Settings, admin_headers: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """``action-links dispatcher`` logs as ``serve`` does, even at DEBUG: one JSON object
    per line, and the libraries that would echo result rows (webhook secrets) held back."""
    nobody = f"http://127.0.0.1:{free_port()}/hook"
    app = create_app(settings.model_copy(update={"webhook_dispatcher": False}))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            tenant = await make_tenant(http, admin_headers, "shop", webhook_url=nobody)
            await tenant.put_action("activate", admin_headers, delivery="async")
            await http.get(link_path(await tenant.mint()))  # the inline attempt fails
    await fetch(database_url, "UPDATE deliveries SET next_attempt_at = now() RETURNING 1")
    env = {"DATABASE_URL": database_url, "SECRET_KEYS": SECRET, "LOG_LEVEL": "debug"}
    with running_dispatcher(env, tmp_path) as dispatcher:

        async def attempted_again() -> bool:
            rows = await fetch(database_url, "SELECT attempts FROM deliveries")
            return int(rows[0]["attempts"]) >= 2

        await eventually(attempted_again, what="the dispatcher to attempt the job")
        dispatcher.send_signal(signal.SIGTERM)
        assert dispatcher.wait(timeout=15) == 0
    log = (tmp_path / "dispatcher.log").read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines
    assert all("level" in json.loads(line) for line in lines)
    assert tenant.webhook_secret not in log
    assert tenant.webhook_secret.removeprefix("whsec_") not in log
