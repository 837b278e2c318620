"""The configuration cache under concurrency: one database load per miss, not one per request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from service import registry
from service.registry import ClientConfig, SingleFlight
from service.state import AppState
from tests.conftest import Tenant
from tests.support.database import POSTGRES, SQLITE

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)


@pytest.fixture
def statements(state: AppState) -> Iterator[list[str]]:
    """Every SQL statement the app's engine runs, as it runs them."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(state.store.engine.sync_engine, "before_cursor_execute", record)
    yield seen
    event.remove(state.store.engine.sync_engine, "before_cursor_execute", record)


def reading(statements: list[str], table: str) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT") and table in s]


async def test_concurrent_misses_load_a_client_once(
    state: AppState, shop: Tenant, statements: list[str]
) -> None:
    state.registry.forget()
    statements.clear()
    configs = await asyncio.gather(*(state.registry.client("shop") for _ in range(50)))
    assert {config.name for config in configs if config is not None} == {"shop inc."}
    assert len(reading(statements, "FROM clients")) == 1


async def test_concurrent_misses_look_a_key_up_once(
    state: AppState, shop: Tenant, statements: list[str]
) -> None:
    state.registry.forget()
    statements.clear()
    clients = await asyncio.gather(*(state.registry.authenticate(shop.key) for _ in range(50)))
    assert {client.id for client in clients if client is not None} == {"shop"}
    assert len(reading(statements, "FROM api_keys")) == 1
    wrong = shop.key[:-4] + ("AAAA" if not shop.key.endswith("AAAA") else "BBBB")
    refused = await asyncio.gather(*(state.registry.authenticate(wrong) for _ in range(10)))
    assert refused == [None] * 10


async def test_a_change_made_during_a_load_is_not_overwritten_by_it(
    state: AppState,
    shop: Tenant,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = asyncio.Event()
    may_finish = asyncio.Event()
    real_load_client = registry.load_client

    async def held_load(session: AsyncSession, client_id: str) -> ClientConfig | None:
        """The real load, held between reading the client and handing it back."""
        config = await real_load_client(session, client_id)
        read.set()
        await may_finish.wait()
        return config

    monkeypatch.setattr(registry, "load_client", held_load)
    state.registry.forget()
    loading = asyncio.ensure_future(state.registry.client("shop"))
    await read.wait()  # the load has read the client as it was
    renamed = await shop.http.patch(
        "/v1/admin/clients/shop", json={"name": "Renamed"}, headers=admin_headers
    )
    assert renamed.status_code == 200, renamed.text
    may_finish.set()
    stale = await loading
    assert stale is not None
    assert stale.name == "shop inc."  # read before the change: it must not be cached
    config = await state.registry.client("shop")
    assert config is not None
    assert config.name == "Renamed"


async def test_single_flight_shares_a_failure_and_then_tries_again() -> None:
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError("database down")

    flights: SingleFlight[str, int] = SingleFlight()
    results = await asyncio.gather(
        *(flights.run("k", failing) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == 1
    with pytest.raises(ConnectionError):
        await flights.run("k", failing)
    assert calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_load_for_the_others() -> None:
    started = asyncio.Event()

    async def slow() -> int:
        started.set()
        await asyncio.sleep(0.05)
        return 7

    flights: SingleFlight[str, int] = SingleFlight()
    first = asyncio.ensure_future(flights.run("k", slow))
    await started.wait()
    second = asyncio.ensure_future(flights.run("k", slow))
    first.cancel()
    assert await second == 7
