"""The redemption path's direct line to asyncpg, on connections of the SQLAlchemy pool.

A redemption is one SQL statement (``service.claim``). Run through
SQLAlchemy, the statement cost less than the layers around it: a greenlet
per call, parameter processing, a cursor adapter and a result object
(bench/README.md, "Profiling"). Here the statement goes to the asyncpg
connection itself, checked out of the same pool as everything else, so the
pool size, timeouts and the "database unavailable" answers stay as they are.

A connection on which a statement failed or was cancelled midway is
invalidated rather than returned: its protocol state is unknown.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

_NAMED_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


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
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        return cls(_NAMED_PARAMETER.sub(number, source), tuple(names))

    def arguments(self, params: Mapping[str, object]) -> list[object]:
        return [params[name] for name in self.names]


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A pooled connection's asyncpg connection, for statements that bypass SQLAlchemy.

    Only for autocommit statements: nothing here begins or ends a transaction,
    so returning the connection to the pool needs no round trip.
    """
    pooled = await engine.raw_connection()
    try:
        yield pooled.driver_connection
    except BaseException as exc:
        pooled.invalidate(exc if isinstance(exc, Exception) else None)
        raise
    finally:
        pooled.close()
