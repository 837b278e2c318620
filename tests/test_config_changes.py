"""Admin changes reach every service process within 2 s on PostgreSQL (API.md, *Admin API*).

Real ``action-links serve`` processes whose caches would keep a client for
30 s (``CACHE_TTL=30``, the most allowed), so only being told of a change
(``LISTEN``/``NOTIFY``, ``service.store.changes``) can explain one arriving
sooner. Changes come through the admin API of one process and through the
CLI; the listener is cut off from the database (a TCP proxy), and its
connection terminated on the server, and changes still arrive within 2 s of
the database being reachable again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.cli import main
from tests.conftest import SHOP_ORIGIN
from tests.support.database import fetch
from tests.support.fleet import report
from tests.support.hooks import eventually
from tests.support.processes import ServiceProcess, running_service
from tests.support.proxy import TcpProxy
from tests.support.served import ADMIN, service_env

pytestmark = pytest.mark.slow

BOUND = 2.0  # seconds: API.md's promise on PostgreSQL
ENV = {"CACHE_TTL": "30"}
LOST = "change listener lost its connection"  # service.store.changes, in the log


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy().start()
    yield proxy
    proxy.close()


@contextmanager
def running_services(log_dir: Path, *envs: dict[str, str]) -> Iterator[list[ServiceProcess]]:
    """A service process per environment, started side by side (each takes a second or
    two to start), until the block ends."""
    with ExitStack() as stack:
        with ThreadPoolExecutor(len(envs)) as pool:
            futures = [
                pool.submit(stack.enter_context, running_service(env, log_dir)) for env in envs
            ]
        yield [future.result() for future in futures]


@dataclass
class Shop:
    keys: dict[str, str]  # key id → key
    link_path: str

    def headers(self, key_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key_id]}"}


async def set_up(http: httpx.AsyncClient, base_url: str) -> Shop:
    body = {"id": "shop", "name": "Shop", "allowed_redirects": [f"{SHOP_ORIGIN}/"]}
    assert (await http.post(f"{base_url}/v1/admin/clients", json=body, headers=ADMIN)).is_success
    action = {
        "success_url": f"{SHOP_ORIGIN}/ok",
        "failure_url": f"{SHOP_ORIGIN}/no",
        "max_uses": None,
    }
    path = f"{base_url}/v1/admin/clients/shop/actions/go"
    assert (await http.put(path, json=action, headers=ADMIN)).is_success
    keys = {}
    for _ in range(3):
        created = (await http.post(f"{base_url}/v1/admin/clients/shop/keys", headers=ADMIN)).json()
        keys[created["id"]] = created["key"]
    first = next(iter(keys))
    body = {"action": "go"}
    minted = await http.post(
        f"{base_url}/v1/links", json=body, headers={"Authorization": f"Bearer {keys[first]}"}
    )
    return Shop(keys, "/r/" + minted.json()["token"])


Probe = Callable[[httpx.AsyncClient, ServiceProcess], Awaitable[bool]]


def mints(shop: Shop, key_id: str) -> Probe:
    """Whether the process still accepts the key (it mints)."""

    async def probe(http: httpx.AsyncClient, process: ServiceProcess) -> bool:
        response = await http.post(
            f"{process.base_url}/v1/links", json={"action": "go"}, headers=shop.headers(key_id)
        )
        assert response.status_code in (201, 401), response.text
        return response.status_code == 201

    return probe


def redeems(shop: Shop) -> Probe:
    """Whether the process still redeems the (unlimited) link."""

    async def probe(http: httpx.AsyncClient, process: ServiceProcess) -> bool:
        response = await http.get(process.base_url + shop.link_path)
        assert response.status_code == 303, response.text
        return "redemption_id=" in response.headers["location"]

    return probe


async def warm(http: httpx.AsyncClient, processes: list[ServiceProcess], *probes: Probe) -> None:
    """Every process has the client and keys cached, and answers yes to every probe."""
    for process in processes:
        for probe in probes:
            assert await probe(http, process)


async def seconds_until_no(
    http: httpx.AsyncClient, processes: list[ServiceProcess], probe: Probe, since: float
) -> list[float]:
    """For each process, seconds from ``since`` until ``probe`` answers no (polled)."""

    async def one(process: ServiceProcess) -> float:
        while await probe(http, process):
            assert time.monotonic() - since < 35, "never told, and not even the cache expired"
            await asyncio.sleep(0.05)
        return time.monotonic() - since

    return list(await asyncio.gather(*(one(p) for p in processes)))


async def cli(database_url: str, *argv: str) -> None:
    """``action-links …`` as an operator runs it, on the database directly: its entry
    function (``service.cli.main``, what ``python -m service`` runs) in a thread of the
    test, which serves nothing, so only being told can bring the change to the services."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", database_url)
        assert await asyncio.to_thread(main, list(argv)) == 0


async def test_admin_changes_reach_every_process_within_two_seconds(
    database_url: str, tmp_path: Path
) -> None:
    env = service_env(database_url, 3, **ENV)
    with running_services(tmp_path, env, env) as processes:
        async with httpx.AsyncClient(timeout=30) as http:
            shop = await set_up(http, processes[0].base_url)
            one, two, three = shop.keys
            await warm(http, processes, mints(shop, one), mints(shop, two), redeems(shop))

            # A key deleted through one process's admin API.
            path = f"{processes[1].base_url}/v1/admin/clients/shop/keys/{two}"
            assert (await http.delete(path, headers=ADMIN)).status_code == 204
            deleted = await seconds_until_no(http, processes, mints(shop, two), time.monotonic())
            assert await mints(shop, one)(http, processes[0])

            # The client disabled with the CLI: its links and its other keys stop.
            await cli(database_url, "client", "update", "shop", "--disable")
            since = time.monotonic()
            disabled = await seconds_until_no(http, processes, redeems(shop), since)
            keys_stop = await seconds_until_no(http, processes, mints(shop, three), since)

            # Enabled again (through the API): everything works again as quickly.
            patch = {"enabled": True}
            path = f"{processes[0].base_url}/v1/admin/clients/shop"
            assert (await http.patch(path, json=patch, headers=ADMIN)).is_success
            since = time.monotonic()
            for process in processes:
                # Polled, not awaited: the measure is how soon another process sees it.
                while not await mints(shop, one)(http, process):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            enabled = time.monotonic() - since
    assert max(deleted) < BOUND, deleted
    assert max(disabled) < BOUND, disabled
    assert max(keys_stop) < BOUND, keys_stop
    assert enabled < BOUND * len(processes), enabled
    report(
        "admin changes reach every process",
        seconds_key_deleted=rounded(deleted),
        seconds_client_disabled_links=rounded(disabled),
        seconds_client_disabled_keys=rounded(keys_stop),
    )


async def test_changes_still_arrive_after_the_listener_lost_the_database(
    database_url: str, tmp_path: Path, proxy: TcpProxy
) -> None:
    env = service_env(database_url, 3, **ENV)
    cut_off_env = service_env(proxy.url_for(database_url), 3, **ENV)
    with running_services(tmp_path, env, cut_off_env) as (admin_side, cut_off):
        async with httpx.AsyncClient(timeout=30) as http:
            shop = await set_up(http, admin_side.base_url)
            one, two, three = shop.keys
            await warm(http, [cut_off], mints(shop, one), mints(shop, two), mints(shop, three))

            # Cut off: a change made meanwhile cannot be heard. The cached key still
            # mints (minting needs no database): the cache lifetime is the fallback.
            proxy.cut()

            async def noticed() -> bool:
                return LOST in cut_off.log()

            await eventually(noticed, what="the listener to notice")
            path = f"{admin_side.base_url}/v1/admin/clients/shop/keys/{two}"
            assert (await http.delete(path, headers=ADMIN)).status_code == 204
            await asyncio.sleep(0.3)  # a few reconnection attempts (backoff from 0.1 s)
            assert await mints(shop, two)(http, cut_off)
            proxy.restore()
            after_cut = await seconds_until_no(http, [cut_off], mints(shop, two), time.monotonic())

            # Once listening again (it is: only the listener's reconnection, which
            # forgets every cached client, explains the key stopping), changes are
            # heard as they are made.
            path = f"{admin_side.base_url}/v1/admin/clients/shop/keys/{three}"
            assert (await http.delete(path, headers=ADMIN)).status_code == 204
            heard = await seconds_until_no(http, [cut_off], mints(shop, three), time.monotonic())

            # The server ends the listening connection (as a restart does).
            await fetch(
                database_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'action-links-listener'",
            )
            await cli(database_url, "client", "update", "shop", "--disable")
            restarted = await seconds_until_no(
                http, [cut_off, admin_side], mints(shop, one), time.monotonic()
            )
    assert max(after_cut) < BOUND, after_cut
    assert max(heard) < BOUND, heard
    assert max(restarted) < BOUND, restarted
    report(
        "admin changes after the listener lost the database",
        seconds_after_restore=rounded(after_cut),
        seconds_once_listening_again=rounded(heard),
        seconds_after_its_connection_was_terminated=rounded(restarted),
    )


def rounded(seconds: list[float]) -> list[float]:
    return [round(s, 2) for s in seconds]
