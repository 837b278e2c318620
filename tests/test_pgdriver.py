"""The redemption path's own line to the pool: first come, first served, and bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from service import pgdriver
from service.config import Settings
from service.db import create_engine, is_unavailable
from service.pgdriver import Statement, driver_connection


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.model_copy(update={"database_pool_size": 2}))
    yield engine
    await engine.dispose()


def test_named_parameters_become_numbered_once_each() -> None:
    statement = Statement.from_named(
        "SELECT :a, CAST(:b AS integer), :a::text, ':quoted' WHERE x = :b"
    )
    assert statement.sql == "SELECT $1, CAST($2 AS integer), $1::text, ':quoted' WHERE x = $2"
    assert statement.arguments({"b": 2, "a": 1}) == [1, 2]


async def test_waiters_are_served_in_arrival_order(engine: AsyncEngine) -> None:
    served: list[int] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with driver_connection(engine) as driver:
            await driver.fetchval("SELECT 1")
            await release.wait()

    async def wait_in_line(n: int) -> None:
        async with driver_connection(engine) as driver:
            served.append(n)
            await driver.fetchval("SELECT 1")

    holders = [asyncio.ensure_future(hold()) for _ in range(2)]
    await asyncio.sleep(0.1)  # both connections are out
    waiters = []
    for n in range(8):
        waiters.append(asyncio.ensure_future(wait_in_line(n)))
        await asyncio.sleep(0.005)
    release.set()
    await asyncio.gather(*holders, *waiters)
    assert served == list(range(8))


async def test_the_line_keeps_newcomers_out_of_the_pools_queue(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No more checkouts wait inside the pool at once than it has connections."""
    checking_out = 0
    peak = 0
    original = AsyncEngine.raw_connection

    async def counted(self: AsyncEngine) -> PoolProxiedConnection:
        nonlocal checking_out, peak
        checking_out += 1
        peak = max(peak, checking_out)
        try:
            return await original(self)
        finally:
            checking_out -= 1

    monkeypatch.setattr(AsyncEngine, "raw_connection", counted)
    release = asyncio.Event()
    served = 0

    async def use() -> None:
        nonlocal served
        async with driver_connection(engine) as driver:
            await driver.fetchval("SELECT 1")
            await release.wait()
            served += 1

    uses = [asyncio.ensure_future(use()) for _ in range(10)]
    await asyncio.sleep(0.1)  # two hold the pool's connections, eight wait in line
    release.set()
    await asyncio.gather(*uses)
    assert served == 10
    assert peak <= 2


async def test_a_full_pool_ends_in_unavailable_not_a_hang(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgdriver, "POOL_TIMEOUT_SECONDS", 0.2)
    release = asyncio.Event()

    async def hold() -> None:
        async with driver_connection(engine):
            await release.wait()

    holders = [asyncio.ensure_future(hold()) for _ in range(2)]
    await asyncio.sleep(0.1)
    started = time.monotonic()
    with pytest.raises(PoolTimeout) as raised:
        async with driver_connection(engine):
            pass
    waited = time.monotonic() - started
    assert is_unavailable(raised.value)
    # The line's own bound, not the pool's 5 s timeout behind it.
    assert waited < 1.0
    release.set()
    await asyncio.gather(*holders)


async def test_a_failed_statement_drops_its_connection(engine: AsyncEngine) -> None:
    failed: list[asyncpg.Connection] = []

    async def divide_by_zero() -> None:
        async with driver_connection(engine) as driver:
            failed.append(driver)
            await driver.fetchval("SELECT 1/0")

    with pytest.raises(asyncpg.DivisionByZeroError) as raised:
        await divide_by_zero()
    assert not is_unavailable(raised.value)  # a bug in a statement is no outage
    assert failed[0].is_closed()
    async with driver_connection(engine) as driver:  # the pool still serves
        assert await driver.fetchval("SELECT 2") == 2


async def test_a_cancelled_statement_drops_its_connection(engine: AsyncEngine) -> None:
    running: list[asyncpg.Connection] = []
    started = asyncio.Event()

    async def sleep_in_the_database() -> None:
        async with driver_connection(engine) as driver:
            running.append(driver)
            started.set()
            await driver.fetchval("SELECT pg_sleep(5)")

    task = asyncio.ensure_future(sleep_in_the_database())
    await started.wait()
    await asyncio.sleep(0.1)  # the statement is on the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert running[0].is_closed()
    async with driver_connection(engine) as driver:  # the pool still serves
        assert await driver.fetchval("SELECT 2") == 2


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (asyncpg.AdminShutdownError("x"), True),
        (asyncpg.CannotConnectNowError("x"), True),
        (asyncpg.TooManyConnectionsError("x"), True),
        (asyncpg.ConnectionDoesNotExistError("x"), True),
        (asyncpg.InterfaceError("x"), True),
        (OSError("x"), True),
        (TimeoutError(), True),
        (asyncpg.UniqueViolationError("x"), False),
        (asyncpg.DivisionByZeroError("x"), False),
        (ValueError("x"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_driver_errors_that_mean_the_database_is_unavailable(
    error: BaseException, unavailable: bool
) -> None:
    if isinstance(error, asyncpg.PostgresError):
        assert error.sqlstate  # the class carries the SQLSTATE that is_unavailable reads
    assert is_unavailable(error) is unavailable
