"""The PostgreSQL store: the redemption's one statement on a direct asyncpg line.

The claim is one statement in autocommit mode, so one round trip does all of
it: the revocation checks, the counter, the audit row and, for webhook
actions, the delivery job. The counter is bumped with a plain ``UPDATE …
WHERE uses < max_uses`` (the link's, and the size the counter was given by
its first use), which does not lock a used-up row, and only a first
use inserts (``ON CONFLICT DO NOTHING``), so requests hammering an exhausted
link never queue on a row lock (DESIGN.md, idea 2). Two first uses racing can
make the loser's INSERT conflict with a row its snapshot does not show; the
statement then reports neither a claim nor an existing row, and is simply
run again with a fresh snapshot.

The direct line. Run through SQLAlchemy, the statement cost less than the
layers around it: a greenlet per call, parameter processing, a cursor adapter
and a result object (bench/README.md, "Profiling"). So the claim and the peek
go to the asyncpg connection itself, checked out of the same pool as
everything else (the pool size, timeouts and "database unavailable" answers
stay as they are), as ``$n`` SQL that SQLAlchemy compiles once from the same
``text()`` it would run. A connection on which a statement failed or was
cancelled midway is invalidated rather than returned: its protocol state is
unknown. asyncpg's own errors meaning "gone" become ``DatabaseUnavailable``
here, as SQLAlchemy's do in ``sql.py``.

The fair wait. Requests wait for a connection in line, on a semaphore as
large as the pool, rather than inside the pool: the pool's queue lets a
newcomer take a connection just returned for a waiter, which then goes to the
back, and under load that starvation was the redirect's p99
(bench/README.md). The wait in line is bounded like the pool's own
(``POOL_TIMEOUT_SECONDS``) and ends in the same ``DatabaseUnavailable``.
Other users of the pool (configuration loads, the dispatcher, the admin API)
do not stand in this line, so while they hold connections the pool's own wait
may follow: twice the timeout at worst, never unbounded. (Cancelling the
pool's checkout midway to share one deadline could lose a connection; a rare
second wait is the cheaper risk.)

Purge takes a session advisory lock, so one process at a time purges, and
addresses rows by ``ctid``.

Configuration changes reach this process through a connection of its own,
listening (``service.store.changes``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service import metrics
from service.config import Settings
from service.errors import DatabaseUnavailable
from service.json_depth import load_stored
from service.models import UTCDateTime
from service.store import ClaimResult, LinkState, PurgeTarget, Via
from service.store.changes import ChangeListener, OnChange
from service.store.sql import (
    REVOKED,
    GuardedPool,
    SqlStore,
    claim_params,
    claimed,
    link_state,
    peek_params,
    peek_sql,
    unavailable,
    unavailable_sqlstate,
    waiting_since,
)
from service.tokens import LinkClaims
from service.tracing import NO_TRACING, Tracing

POOL_TIMEOUT_SECONDS = 5.0
LISTENER_CONNECT_TIMEOUT = 5.0
MAX_RACE_RETRIES = 3
ADVISORY_LOCK_KEY = 0x616C_7075_7267_6531  # "alpurge1": one purge per database

# SQLAlchemy's ``text()`` would also read a ``:name`` in a comment or in a quoted
# literal as a parameter. The statements here have neither; ``Positional`` keeps it so.
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_COMMENT = re.compile(r"--|/\*")


@dataclass(frozen=True, slots=True)
class Positional:
    """A ``text()`` statement as asyncpg takes it: ``$n`` SQL and the names in order."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def compile(cls, source: str, dialect: Dialect) -> Positional:
        """``dialect``: the engine's (asyncpg's), whose ``$n`` style the compiler writes."""
        literals = _LITERAL.findall(source)
        if _COMMENT.search(_LITERAL.sub("", source)) or any(":" in s for s in literals):
            raise ValueError("no comments, nor literals with ':', in a direct statement")
        compiled = text(source).compile(dialect=dialect)
        return cls(compiled.string, tuple(compiled.positiontup or ()))

    def arguments(self, params: Mapping[str, object]) -> list[object]:
        return [params[name] for name in self.names]


CLAIM_SQL = f"""
WITH revoked AS (
    SELECT ({REVOKED}) AS yes
),
existing AS (
    SELECT uses FROM claims WHERE client_id = :client_id AND key = :claim_key
),
bumped AS (
    UPDATE claims SET uses = uses + 1, issued = issued + 1, last_used_at = :now
    WHERE client_id = :client_id AND key = :claim_key
      AND (CAST(:max_uses AS integer) IS NULL OR uses < CAST(:max_uses AS integer))
      AND (claims.max_uses IS NULL OR uses < claims.max_uses)
      AND NOT (SELECT yes FROM revoked)
    RETURNING issued
),
created AS (
    INSERT INTO claims
        (client_id, key, uses, issued, max_uses, expires_at, first_used_at, last_used_at)
    SELECT :client_id, :claim_key, 1, 1, CAST(:max_uses AS integer),
           CAST(:expires_at AS timestamptz), :now, :now
    WHERE NOT EXISTS (SELECT 1 FROM existing) AND NOT (SELECT yes FROM revoked)
    ON CONFLICT DO NOTHING
    RETURNING issued
),
claimed AS (
    SELECT issued FROM bumped UNION ALL SELECT issued FROM created
),
audit AS (
    INSERT INTO redemptions
        (id, client_id, link_id, claim_key, action, subject, data, use, max_uses, redeemed_at,
         once_key, via)
    SELECT :redemption_id, :client_id, :link_id, :claim_key, :action, :subject,
           CAST(:data AS json), issued, CAST(:max_uses AS integer), :now, :once_key, :via
    FROM claimed
    RETURNING id, use
),
job AS (
    INSERT INTO deliveries
        (redemption_id, client_id, status, attempts, next_attempt_at, leased_until, created_at)
    SELECT id, :client_id, CAST(:job_status AS text), 0, :now,
           CAST(:leased_until AS timestamptz), :now
    FROM audit WHERE CAST(:deliver AS boolean)
    RETURNING redemption_id
)
SELECT (SELECT yes FROM revoked) AS revoked,
       EXISTS (SELECT 1 FROM existing) AS existed,
       (SELECT use FROM audit) AS use,
       (SELECT count(*) FROM job) AS jobs
"""


def driver_unavailable(exc: BaseException) -> bool:
    """What asyncpg raises itself for a connection that is gone or a server that is leaving."""
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return unavailable_sqlstate(exc)
    return unavailable(exc)


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    options: dict[str, Any] = {
        "poolclass": GuardedPool,
        # hide_parameters: statement parameters (webhook secrets, key hashes) never
        # appear in a logged error or in an exception's message.
        "hide_parameters": True,
        # Rows written before data had a depth limit may hold JSON too deep for json.loads.
        "json_deserializer": load_stored,
        # A fixed pool: overflow connections are closed as soon as they are
        # returned, and under load that meant a new PostgreSQL backend (a fork,
        # authentication, the asyncpg type codecs) every few requests, which cost
        # more than the requests themselves. Requests wait for a connection instead.
        "pool_size": settings.database_pool_size,
        "max_overflow": 0,
        # Fail fast when the database is down: a 503 beats a hung request.
        "pool_timeout": POOL_TIMEOUT_SECONDS,
        "connect_args": {
            "timeout": 5,
            "command_timeout": 15,
            "server_settings": {"application_name": "action-links"},
        },
    }
    options.update(overrides)
    return create_async_engine(settings.database_url, **options)


class PostgresStore(SqlStore):
    insert = staticmethod(postgresql.insert)

    def __init__(self, engine: AsyncEngine, tracing: Tracing = NO_TRACING) -> None:
        super().__init__(engine)
        self._listener: ChangeListener | None = None
        self._tracing = tracing
        size = getattr(engine.sync_engine.pool, "size", lambda: 1)()
        self._line = asyncio.Semaphore(max(1, size))
        self._claim = Positional.compile(CLAIM_SQL, engine.dialect)
        self._peek = {
            recorded: Positional.compile(peek_sql(recorded), engine.dialect)
            for recorded in (False, True)
        }

    def watch(self, on_change: OnChange) -> None:
        """One connection of its own, outside the pool, listens for the whole process."""
        assert self._listener is None, "one listener per store"
        self._listener = ChangeListener(self._connect_listener, on_change)
        self._listener.start()

    async def _connect_listener(self) -> asyncpg.Connection[Any]:
        url = self._engine.url.set(drivername="postgresql")
        connection: asyncpg.Connection[Any] = await asyncpg.connect(
            url.render_as_string(hide_password=False),
            timeout=LISTENER_CONNECT_TIMEOUT,
            server_settings={"application_name": "action-links-listener"},
        )
        return connection

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        await super().close()

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[asyncpg.Connection[Any]]:
        """A pooled connection's asyncpg connection, after a fair wait in line.

        Only for autocommit statements: nothing here begins or ends a
        transaction, so returning the connection to the pool needs no round trip.
        """
        asked_at = time.perf_counter()
        try:
            async with asyncio.timeout(POOL_TIMEOUT_SECONDS):
                await self._line.acquire()
        except TimeoutError:
            metrics.pool_waited(time.perf_counter() - asked_at)
            raise DatabaseUnavailable("no database connection free in time") from None
        try:
            with waiting_since(asked_at):  # the pool's checkout times the whole wait
                pooled = await self._engine.raw_connection()
            try:
                yield pooled.driver_connection
            except BaseException as exc:
                pooled.invalidate(exc if isinstance(exc, Exception) else None)
                if isinstance(exc, Exception) and driver_unavailable(exc):
                    raise DatabaseUnavailable() from exc
                raise
            finally:
                pooled.close()
        finally:
            self._line.release()

    async def claim(
        self,
        link: LinkClaims,
        now: datetime,
        *,
        deliver: bool,
        lease: datetime | None,
        via: Via = Via.LINK,
        sync: bool = False,
    ) -> ClaimResult:
        params = claim_params(link, now, deliver, lease, via, sync)
        params["data"] = json.dumps(link.data)  # the json codec SQLAlchemy sets up takes text
        arguments = self._claim.arguments(params)
        traced = self._tracing.statement(self._engine, "claim", self._claim.sql)
        async with self.driver() as driver:  # no transaction: autocommit
            with traced:
                for _ in range(MAX_RACE_RETRIES):
                    row = await driver.fetchrow(self._claim.sql, *arguments)
                    assert row is not None
                    if row["revoked"] or row["use"] is not None or row["existed"]:
                        break
        if row["use"] is None:
            return ClaimResult(revoked=bool(row["revoked"]), redemption=None)
        redemption_id = str(params["redemption_id"])
        return ClaimResult(
            revoked=False, redemption=claimed(link, redemption_id, now, row["use"], via)
        )

    async def peek(self, link: LinkClaims, *, recorded: bool = False) -> LinkState:
        statement = self._peek[recorded]
        async with self.driver() as driver:
            with self._tracing.statement(self._engine, "peek", statement.sql):
                row = await driver.fetchrow(statement.sql, *statement.arguments(peek_params(link)))
        assert row is not None
        return link_state(row)

    async def _limit_statement_time(self, conn: AsyncConnection, seconds: float) -> None:
        await conn.execute(text(f"SET LOCAL statement_timeout = {int(seconds * 1000)}"))

    async def _try_lock(self, conn: AsyncConnection) -> bool:
        statement = text("SELECT pg_try_advisory_lock(:key)")
        locked = bool((await conn.execute(statement, {"key": ADVISORY_LOCK_KEY})).scalar_one())
        await conn.commit()
        return locked

    async def _unlock(self, conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
        await conn.commit()

    def _batch_statement(self, target: PurgeTarget) -> TextClause:
        """Rows are addressed by ``ctid``: ``= ANY(ARRAY(…))`` makes PostgreSQL fetch them
        with a TID scan instead of joining the whole table. The outer condition is
        checked again, so a row changed since the inner select is left alone."""
        where = f"{target.column} < :cutoff"
        return text(
            f"DELETE FROM {target.table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {target.table} WHERE {where} LIMIT :n)) AND {where}"
        ).bindparams(bindparam("cutoff", type_=UTCDateTime))
