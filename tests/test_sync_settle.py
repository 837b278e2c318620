"""A ``sync`` refusal's give-back, against real service processes and a database that goes away.

The database is cut (through ``tests/support/proxy.py``) the moment the
receiver is called, so the give-back meets a dead database; a service
process is SIGKILLed while its receiver thinks. Every time the person gets
an honest answer, the use comes back, and the refused (or unsettled)
redemption is never sent to the receiver again (API.md, *Webhooks*).

One service process (behind the proxy) serves the whole module, each case
with a client and a receiver of its own; the kill's victim (reaching
PostgreSQL directly) is started beside it, at the same time. The two cases
that wait out a lease (the longer cut, the kill) run at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import SHOP_ORIGIN
from tests.support.database import (
    fetch,
    module_database_url,  # noqa: F401 (the module's database_url)
)
from tests.support.fleet import follow
from tests.support.hooks import eventually
from tests.support.processes import ServiceProcess, running_service
from tests.support.proxy import (
    TcpProxy,
    module_proxy,  # noqa: F401 (the module's proxy)
)
from tests.support.receiver import NEVER, Answer, Received, Receiver
from tests.support.served import ADMIN, service_env

pytestmark = pytest.mark.slow

# Short, so that a re-sent refusal would show within the test: after 0.5 s, 0.5 s, 0.5 s.
ENV = {
    "WEBHOOK_TIMEOUT": "1",
    "WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,0.5",
    "CACHE_TTL": "30",  # the receiver's address is known without the database
}
LEASE_SECONDS = 1 + 5  # WEBHOOK_TIMEOUT + the lease's grace (service.delivery)


@pytest.fixture(scope="module")
def processes(
    database_url: str, proxy: TcpProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    """The module's ``serve`` (through the proxy) and the kill test's victim (not), at once.

    The victim's own work is only the request it is killed in: the survivor's
    dispatcher is the one that gives back what it abandoned."""
    log_dir = tmp_path_factory.mktemp("settle")
    envs = [
        service_env(proxy.url_for(database_url), 3, **ENV),
        # Its dispatcher is off: no sweep or delivery of the other tests' is done by it.
        service_env(database_url, 3, **ENV, WEBHOOK_DISPATCHER="false"),
    ]
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(stack.enter_context, running_service(env, log_dir)) for env in envs]
        yield [started.result() for started in starting]


@pytest.fixture(scope="module")
def service(processes: list[ServiceProcess]) -> ServiceProcess:
    """``serve`` reaching PostgreSQL through the proxy, for every test of the module."""
    return processes[0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().up()
    yield receiver
    receiver.down()


@pytest.fixture
def client_id(request: pytest.FixtureRequest) -> str:
    """A client of this test's own in the shared database."""
    return "shop-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]


@pytest.fixture
def restorations(proxy: TcpProxy) -> Iterator[list[threading.Timer]]:
    """Timers that bring the database back; waited for before the proxy closes."""
    timers: list[threading.Timer] = []
    yield timers
    for timer in timers:
        timer.join()


@dataclass
class Shop:
    id: str
    base_url: str
    headers: dict[str, str]

    async def mint(self, http: httpx.AsyncClient) -> str:
        """A single-use link of the sync action; its URL."""
        response = await http.post(
            f"{self.base_url}/v1/links", json={"action": "buy"}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        url: str = response.json()["url"]
        return self.base_url + url[url.index("/r/") :]


async def set_up(http: httpx.AsyncClient, base_url: str, webhook_url: str, client_id: str) -> Shop:
    body = {
        "id": client_id,
        "name": "Shop",
        "webhook_url": webhook_url,
        "allowed_redirects": [f"{SHOP_ORIGIN}/"],
    }
    created = await http.post(f"{base_url}/v1/admin/clients", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    action = {
        "success_url": f"{SHOP_ORIGIN}/ok",
        "failure_url": f"{SHOP_ORIGIN}/no",
        "delivery": "sync",
    }
    path = f"{base_url}/v1/admin/clients/{client_id}/actions/buy"
    put = await http.put(path, json=action, headers=ADMIN)
    assert put.status_code == 200, put.text
    key = await http.post(f"{base_url}/v1/admin/clients/{client_id}/keys", headers=ADMIN)
    return Shop(client_id, base_url, {"Authorization": f"Bearer {key.json()['key']}"})


def refuse_first_and_cut(
    receiver: Receiver, proxy: TcpProxy, down_for: float, timers: list[threading.Timer]
) -> None:
    """The receiver's first call cuts the database for ``down_for`` s, then refuses."""

    def script(request: Received, _seen: int) -> Answer:
        if len(receiver.received) > 1:
            return Answer(200)
        proxy.cut()
        timers.append(threading.Timer(down_for, proxy.restore))
        timers[-1].start()
        return Answer(409, json={"error": "sold_out"}, delay=0.2)

    receiver.script = script


async def redemptions(database_url: str, client_id: str) -> list[Any]:
    return await fetch(database_url, "SELECT id FROM redemptions WHERE client_id = $1", client_id)


def sends(receiver: Receiver) -> dict[str, int]:
    """How often each message (by ``webhook-id``) reached the receiver."""
    counts: dict[str, int] = {}
    for request in receiver.received:
        counts[request.webhook_id] = counts.get(request.webhook_id, 0) + 1
    return counts


async def refused_through_a_cut(
    database_url: str,
    service: ServiceProcess,
    client_id: str,
    receiver: Receiver,
    proxy: TcpProxy,
    restorations: list[threading.Timer],
    down_for: float,
    given_back_by: str,
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        shop = await set_up(http, service.base_url, receiver.url, client_id)
        url = await shop.mint(http)
        refuse_first_and_cut(receiver, proxy, down_for, restorations)

        started = time.monotonic()
        outcome, _ = await follow(url)
        answered_after = time.monotonic() - started
        # The receiver's verdict, whether or not the give-back is done yet.
        assert outcome == "rejected", outcome
        [refused] = receiver.received
        assert answered_after < 1 + 3 + 1.5  # the call, the give-back's wait, slack

        if given_back_by == "the request":
            assert await redemptions(database_url, client_id) == []
        else:
            await asyncio.sleep(max(0.0, down_for + 0.5 - answered_after))

        async def redeems_again() -> bool:
            outcome, _ = await follow(url)
            return outcome == "success"

        await eventually(redeems_again, timeout=LEASE_SECONDS + 10, what="the use given back")
        # Longer than the whole retry schedule: the refusal is never sent again.
        await asyncio.sleep(2.0)
    counts = sends(receiver)
    assert counts[refused.webhook_id] == 1
    assert sorted(counts.values()) == [1, 1]
    assert len(await redemptions(database_url, client_id)) == 1


async def killed_mid_call(
    database_url: str,
    survivor: ServiceProcess,
    doomed: ServiceProcess,
    client_id: str,
    receiver: Receiver,
) -> None:
    """Nobody settles it, so every process applies the rule: after its lease the
    redemption is given back (never delivered: the person was never told success).
    The module's service survives; the doomed process was started beside it."""
    receiver.script = lambda _r, _s: Answer(delay=NEVER if len(receiver.received) == 1 else 0)
    async with httpx.AsyncClient(timeout=30) as http:
        shop = await set_up(http, doomed.base_url, receiver.url, client_id)
        url = await shop.mint(http)
        pending = asyncio.ensure_future(follow(url))
        await receiver.wait_for(1)
        doomed.process.kill()
        await asyncio.to_thread(doomed.process.wait, 10)
        assert (await pending)[0] == "transport"
        [abandoned] = receiver.received
        assert len(await redemptions(database_url, client_id)) == 1

        survivor_url = survivor.base_url + url[url.index("/r/") :]

        async def redeems_again() -> bool:
            outcome, _ = await follow(survivor_url)
            return outcome == "success"

        await eventually(redeems_again, timeout=LEASE_SECONDS + 10, what="the use given back")
        await asyncio.sleep(2.0)  # longer than the retry schedule: nothing is sent again
    counts = sends(receiver)
    assert counts[abandoned.webhook_id] == 1
    assert sorted(counts.values()) == [1, 1]
    [row] = await fetch(
        database_url, "SELECT status FROM deliveries WHERE client_id = $1", client_id
    )
    assert row["status"] == "delivered"


async def test_a_refused_use_is_given_back_through_a_database_cut_shorter_than_it_waits(
    database_url: str,
    service: ServiceProcess,
    client_id: str,
    receiver: Receiver,
    proxy: TcpProxy,
    restorations: list[threading.Timer],
) -> None:
    """The request itself gives the use back, once the database is back."""
    await refused_through_a_cut(
        database_url, service, client_id, receiver, proxy, restorations, 1.0, "the request"
    )


async def test_a_longer_cut_and_a_kill_mid_call_leave_their_uses_given_back_by_the_sweep(
    database_url: str,
    processes: list[ServiceProcess],
    client_id: str,
    receiver: Receiver,
    proxy: TcpProxy,
    restorations: list[threading.Timer],
) -> None:
    """Two cases the survivor's sweep settles, at once (each waits out a lease), with a
    client and a receiver each: a refusal whose give-back meets a database cut for
    longer than the request waits, and a process SIGKILLed while its receiver thinks.

    The kill begins once the cut has: its lease (6 s) then ends after the cut (5 s),
    so the survivor redeems its link again with the database back.
    """
    survivor, doomed = processes
    killed_receiver = Receiver().up()
    try:
        cut_begun = asyncio.create_task(receiver.wait_for(1))
        cut = asyncio.create_task(
            refused_through_a_cut(
                database_url,
                survivor,
                client_id + "-cut",
                receiver,
                proxy,
                restorations,
                5.0,
                "the sweep",
            )
        )
        await asyncio.wait({cut_begun, cut}, return_when=asyncio.FIRST_COMPLETED)
        kill = killed_mid_call(database_url, survivor, doomed, client_id + "-kill", killed_receiver)
        await asyncio.gather(cut, kill)
    finally:
        cut_begun.cancel()
        killed_receiver.down()
