"""The redemption path's direct line to asyncpg, on connections of the SQLAlchemy pool.

A redemption is one SQL statement (``service.claim``). Run through
SQLAlchemy, the statement cost less than the layers around it: a greenlet
per call, parameter processing, a cursor adapter and a result object
(bench/README.md, "Profiling"). Here the statement goes to the asyncpg
connection itself, checked out of the same pool as everything else, so the
pool size, timeouts and the "database unavailable" answers stay as they are.

A connection on which a statement failed or was cancelled midway is
invalidated rather than returned: its protocol state is unknown.

Requests wait for a connection in line, on a semaphore as large as the pool,
rather than inside the pool: the pool's queue lets a newcomer take a
connection just returned for a waiter, which then goes to the back, and under
load that starvation was the redirect's p99 (bench/README.md). The wait in
line is bounded like the pool's own (``POOL_TIMEOUT_SECONDS``) and ends in the
same "database unavailable" answer. Other users of the pool (configuration
loads, the dispatcher, the admin API) do not stand in this line, so while they
hold connections the pool's own wait may follow: twice the timeout at worst,
never unbounded. (Cancelling the pool's checkout midway to share one deadline
could lose a connection; a rare second wait is the cheaper risk.)
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import POOL_TIMEOUT_SECONDS

# A quoted literal (left as it is), or a ``:name`` that is no ``::type`` cast.
_LITERAL_OR_PARAMETER = re.compile(r"'(?:[^']|'')*'|(?<![:\w]):(\w+)")


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL written with ``:name`` parameters, rewritten once into asyncpg's ``$n``."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def from_named(cls, source: str) -> Statement:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match[1]
            if name is None:
                return match[0]
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        return cls(_LITERAL_OR_PARAMETER.sub(number, source), tuple(names))

    def arguments(self, params: Mapping[str, object]) -> list[object]:
        return [params[name] for name in self.names]


_lines: weakref.WeakKeyDictionary[Engine, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _line_for(engine: AsyncEngine) -> asyncio.Semaphore:
    line = _lines.get(engine.sync_engine)
    if line is None:
        size = getattr(engine.sync_engine.pool, "size", lambda: 1)()
        line = _lines[engine.sync_engine] = asyncio.Semaphore(max(1, size))
    return line


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A pooled connection's asyncpg connection, for statements that bypass SQLAlchemy.

    Only for autocommit statements: nothing here begins or ends a transaction,
    so returning the connection to the pool needs no round trip.
    """
    line = _line_for(engine)
    try:
        async with asyncio.timeout(POOL_TIMEOUT_SECONDS):
            await line.acquire()
    except TimeoutError:
        raise PoolTimeout("no database connection free within the pool timeout") from None
    try:
        pooled = await engine.raw_connection()
        try:
            yield pooled.driver_connection
        except BaseException as exc:
            pooled.invalidate(exc if isinstance(exc, Exception) else None)
            raise
        finally:
            pooled.close()
    finally:
        line.release()
