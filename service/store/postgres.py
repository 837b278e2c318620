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
run again with a fresh snapshot. Single-use links' first uses that find every
connection taken are claimed many to a statement instead (``claim_batch.py``).

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

Kept connections. Checking a connection out of SQLAlchemy's pool and back in
cost ~22 µs of CPU per redemption, as much as the rest of the line. So the
line keeps the connections it used, idle, for its next turns: at most all but
``KEPT_FOR_SESSIONS`` of the pool, which stay for SQLAlchemy's sessions
(configuration loads, the dispatcher, the admin API, purge); beyond that a
turn checks one out and in as before. They still count as the pool's (its
size bounds them; the ``in use`` gauge leaves them out). A connection that
fails as "gone" ends every kept one too, so the next turns get fresh ones
from the pool, as its own invalidation would have made them.

Purge takes a session advisory lock, so one process at a time purges, and
addresses rows by ``ctid`` (the audit log's by ranges of ``seq``: ``purge_batches``).

Configuration changes reach this process through a connection of its own,
listening (``service.store.changes``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import TextClause, bindparam, event, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError, EmulatedDBAPIException
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection

from service import metrics
from service.config import Settings
from service.errors import DatabaseUnavailable
from service.json_depth import load_stored
from service.models import SINGLE_USE, UTCDateTime
from service.store import ClaimResult, LinkState, OutboxWork, PurgeTarget, Via
from service.store.changes import ChangeListener, OnChange
from service.store.claim_batch import BATCH_CLAIM_SQL, ClaimBatches
from service.store.sql import (
    REVOKED,
    GuardedPool,
    SqlStore,
    WaitObserver,
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
# Pooled connections the redemption line never keeps for itself: configuration
# loads, the dispatcher, the admin API and purge use them through SQLAlchemy.
KEPT_FOR_SESSIONS = 2
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


# The delivery job of a claim's audit row, in both claims' statements (a CTE named ``job``),
# only in the variants that deliver: a claim of an action without a webhook neither
# plans nor runs an INSERT into ``deliveries`` (``claim_sql``).
DELIVERY_JOB = """,
job AS (
    INSERT INTO deliveries
        (redemption_id, client_id, status, attempts, next_attempt_at, leased_until, created_at)
    SELECT id, :client_id, CAST(:job_status AS text), 0, :now,
           CAST(:leased_until AS timestamptz), :now
    FROM audit WHERE CAST(:deliver AS boolean)
    RETURNING redemption_id
)"""
JOB_PLACE, JOBS_PLACE = "{job}", "{jobs}"


def claim_sql(template: str, deliver: bool) -> str:
    """``template`` with its delivery job (``deliver``), or without one."""
    if deliver:
        return template.replace(JOB_PLACE, DELIVERY_JOB).replace(
            JOBS_PLACE, "(SELECT count(*) FROM job)"
        )
    return template.replace(JOB_PLACE, "").replace(JOBS_PLACE, "0")


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
){JOB_PLACE}
SELECT (SELECT yes FROM revoked) AS revoked,
       EXISTS (SELECT 1 FROM existing) AS existed,
       (SELECT use FROM audit) AS use,
       {JOBS_PLACE} AS jobs
"""


class _Turn:
    """One turn on the direct line: a place in line, then a connection; given back after.

    A class rather than ``@asynccontextmanager``: it runs for every redemption.
    The connection is one the line kept from an earlier turn, or one checked out
    of the pool now; given back, it is kept (up to the store's ``_keep``) or
    checked in. A connection whose statement failed or was cancelled midway is
    invalidated rather than given back: its protocol state is unknown.
    """

    __slots__ = ("_observe", "_pooled", "_store")

    def __init__(self, store: PostgresStore, observe: WaitObserver) -> None:
        self._store = store
        self._observe = observe  # the wait for a place and a connection, in seconds

    async def __aenter__(self) -> asyncpg.Connection[Any]:
        store = self._store
        line = store._line
        asked_at = time.perf_counter()
        if line.locked():  # a wait in line: bounded
            try:
                async with asyncio.timeout(POOL_TIMEOUT_SECONDS):
                    await line.acquire()
            except TimeoutError:
                self._observe(time.perf_counter() - asked_at)
                raise DatabaseUnavailable("no database connection free in time") from None
        else:  # a place free: taken at once, without arming a timer (most requests)
            await line.acquire()
        try:
            kept = store._take_kept()
            if kept is not None:
                self._pooled = kept
                self._observe(time.perf_counter() - asked_at)
            else:
                # The pool's checkout times the whole wait.
                with waiting_since(asked_at, self._observe):
                    self._pooled = await store._engine.raw_connection()
        except BaseException:
            line.release()
            raise
        connection: asyncpg.Connection[Any] = self._pooled.driver_connection
        return connection

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        store, pooled = self._store, self._pooled
        try:
            if exc is None:
                if len(store._kept) < store._keep and not store._closing:
                    store._kept.append(pooled)
                else:
                    pooled.close()
                return
            pooled.invalidate(exc if isinstance(exc, Exception) else None)
            pooled.close()
            if isinstance(exc, Exception) and driver_unavailable(exc):
                store._drop_kept()
                raise DatabaseUnavailable() from exc
        finally:
            store._line.release()


# A single-use link (``max_uses`` 1, no once key) claimed without a counter: its audit
# row is its claim (DESIGN.md, idea 2; migration 0006). The partial unique index
# ``ux_redemptions_single_use`` admits one row per link, so of first uses racing one
# inserts; the others' INSERTs wait for it and then fail on that index (a unique
# violation: the statement did nothing), and ``claim`` runs them again, when the probe
# below sees the row: refusals. A plain INSERT rather than ``ON CONFLICT DO NOTHING``:
# the speculative insertion cost every first use a second probe of the index, a lock
# in the shared lock table and a confirming WAL record, to spare only the rare race a
# second round trip (bench/README.md, "First use's claim"). A counter row, if the link
# has one (claimed before 0006, or a sync use given back: ``SqlStore._give_back``),
# still has its say: the link is used while it counts a use, and the next use number
# follows the ones it handed out.
#
# The refusal is the cheap path: a link whose audit row exists is used (a give-back
# deletes the row, purge gives the link a used-up counter before deleting it), so the
# probe of that index comes first in the INSERT's condition and an exhausted link's
# claim ends there, without forming the row (no sequence number drawn, no JSON read)
# and without an insertion. The unique index still decides races.
SINGLE_USE_CLAIM_SQL = f"""
WITH revoked AS (
    SELECT ({REVOKED}) AS yes
),
counter AS (
    SELECT uses, issued FROM claims WHERE client_id = :client_id AND key = :claim_key
),
audit AS (
    INSERT INTO redemptions
        (id, client_id, link_id, claim_key, action, subject, data, use, max_uses, redeemed_at,
         once_key, via, claim_expires_at)
    SELECT :redemption_id, :client_id, :link_id, :claim_key, :action, :subject,
           CAST(:data AS json), COALESCE((SELECT issued FROM counter), 0) + 1, 1, :now,
           NULL, :via, CAST(:expires_at AS timestamptz)
    WHERE NOT EXISTS (SELECT 1 FROM redemptions
                      WHERE client_id = :client_id AND claim_key = :claim_key AND {SINGLE_USE})
      AND NOT (SELECT yes FROM revoked) AND COALESCE((SELECT uses FROM counter), 0) < 1
    RETURNING id, use
){JOB_PLACE}
SELECT (SELECT yes FROM revoked) AS revoked,
       TRUE AS existed,
       (SELECT use FROM audit) AS use,
       {JOBS_PLACE} AS jobs
"""


# ``SqlStore.outbox_work``'s look (its conditions: ``_due`` and ``_abandoned`` in sql.py;
# the contract test of ``outbox_work`` holds the two to the same answers), as one prepared
# statement on the direct line: an idle dispatcher's round costs a tenth of the CPU it
# costs through SQLAlchemy's connection (bench/README.md, "The dispatcher's idle rounds").
OUTBOX_WORK_SQL = """
SELECT EXISTS (SELECT 1 FROM deliveries
               WHERE status = 'pending' AND next_attempt_at <= :now
                 AND (leased_until IS NULL OR leased_until < :now)) AS due,
       EXISTS (SELECT 1 FROM deliveries
               WHERE status = 'deciding' AND leased_until < :now) AS abandoned
"""


def carries_its_claim(link: LinkClaims) -> bool:
    """Whether ``link``'s audit row is its claim (no counter row): a single-use link."""
    return link.max_uses == 1 and link.once_key is None


def driver_unavailable(exc: BaseException) -> bool:
    """What asyncpg raises itself for a connection that is gone or a server that is leaving."""
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.InternalClientError):
        # "cannot switch to state …; another operation is in progress": a connection
        # the server dropped while it sat idle (its FATAL arrived unasked). The line
        # hands a connection to one turn at a time, so nothing else leaves it so.
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return unavailable_sqlstate(exc)
    if isinstance(exc, EmulatedDBAPIException) and exc.orig is not None:
        # asyncpg's error in SQLAlchemy's DB-API classes, as the pool raises it when a
        # new connection fails midway ("connection was closed in the middle of
        # operation": the server or the network dropped the handshake).
        return driver_unavailable(exc.orig)
    return unavailable(exc)


class PostgresPool(GuardedPool):
    """A new connection that fails as it is made raises asyncpg's error unwrapped (no
    statement ran, so no ``handle_error`` saw it): read as the direct line reads it."""

    unavailable = staticmethod(driver_unavailable)


def pass_over_closed(dbapi_connection: Any, record: object, proxy: object) -> None:
    """``checkout``: a pooled connection that the server or the network ended while it
    sat in the pool (a restart, a failover, a cut, noticed by asyncpg when its socket
    closed) is replaced before it is handed out, so the first requests after the
    database is back are not 503s. No round trip: asyncpg's own state is read."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    options: dict[str, Any] = {
        "poolclass": PostgresPool,
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
    engine = create_async_engine(settings.database_url, **options)
    event.listen(engine.sync_engine.pool, "checkout", pass_over_closed)
    return engine


class PostgresStore(SqlStore):
    insert = staticmethod(postgresql.insert)

    def __init__(self, engine: AsyncEngine, tracing: Tracing = NO_TRACING) -> None:
        super().__init__(engine)
        self._listener: ChangeListener | None = None
        self._tracing = tracing
        size = getattr(engine.sync_engine.pool, "size", lambda: 1)()
        self._line = asyncio.Semaphore(max(1, size))
        # Connections the line keeps checked out between turns (at most all but
        # KEPT_FOR_SESSIONS of the pool): a checkout and checkin through SQLAlchemy's
        # pool cost ~22 µs of CPU per redemption (bench/README.md).
        self._keep = max(0, size - KEPT_FOR_SESSIONS)
        self._kept: list[PoolProxiedConnection] = []
        self._closing = False
        # (single-use link, delivery job) → the claim's statement
        self._claims = {
            (single, deliver): Positional.compile(
                claim_sql(SINGLE_USE_CLAIM_SQL if single else CLAIM_SQL, deliver), engine.dialect
            )
            for single in (False, True)
            for deliver in (False, True)
        }
        self._peek = {
            recorded: Positional.compile(peek_sql(recorded), engine.dialect)
            for recorded in (False, True)
        }
        self._outbox_work = Positional.compile(OUTBOX_WORK_SQL, engine.dialect)
        # Single-use first uses that find the line full are claimed together (claim_batch.py);
        # not while statements are traced, where each claim is its own span.
        self._batches = (
            ClaimBatches(self, self._line, Positional.compile(BATCH_CLAIM_SQL, engine.dialect))
            if tracing is NO_TRACING
            else None
        )

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
        if self._batches is not None:
            await self._batches.drain()
        self._closing = True
        kept, self._kept = self._kept, []
        for pooled in kept:
            pooled.close()  # back to the pool, which the engine's disposal closes
        await super().close()

    def driver(self, observe: WaitObserver = metrics.pool_waited) -> _Turn:
        """A pooled connection's asyncpg connection, after a fair wait in line
        (``async with store.driver() as connection``), the wait reported to ``observe``.

        Only for autocommit statements: nothing here begins or ends a
        transaction, so returning the connection needs no round trip.
        """
        return _Turn(self, observe)

    def kept_connections(self) -> int:
        return len(self._kept)

    def claim_batches(self) -> int:
        """Statements so far that claimed more than one queued first use (claim_batch.py)."""
        return 0 if self._batches is None else self._batches.batches

    def _take_kept(self) -> PoolProxiedConnection | None:
        """A kept connection that is still open, if any. One the server or the network
        ended while it was kept (a restart, a failover, a proxy's cut, noticed by asyncpg
        when the socket closed) is discarded, not handed to a redemption as a 503."""
        while self._kept:
            pooled = self._kept.pop()
            connection = pooled.driver_connection
            if connection is not None and not connection.is_closed():
                return pooled
            pooled.invalidate()
            pooled.close()
        return None

    def _drop_kept(self) -> None:
        """The database went away: the kept connections are likely dead too, so none is
        handed out again (the pool makes new ones, as after its own invalidation)."""
        kept, self._kept = self._kept, []
        for pooled in kept:
            pooled.invalidate()
            pooled.close()

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
        single = carries_its_claim(link)
        if single and not deliver and self._batches is not None and self._batches.wanted():
            return await self._batches.claim(link, now, via)  # claim_batch.py
        params = claim_params(link, now, deliver, lease, via, sync)
        statement = self._claims[single, deliver]
        traced = self._tracing.statement(self._engine, "claim", statement.sql)
        async with self.driver() as driver:  # no transaction: autocommit
            with traced:
                return await self._claim(driver, statement, params, link, now, via)

    async def claim_alone(
        self, driver: asyncpg.Connection[Any], link: LinkClaims, now: datetime, via: Via
    ) -> ClaimResult:
        """A single-use link's claim without a delivery job, alone, on ``driver`` (a turn's
        connection): what ``claim`` runs for it, for the batches' turns."""
        params = claim_params(link, now, False, None, via, False)
        return await self._claim(driver, self._claims[True, False], params, link, now, via)

    async def _claim(
        self,
        driver: asyncpg.Connection[Any],
        statement: Positional,
        params: dict[str, object],
        link: LinkClaims,
        now: datetime,
        via: Via,
    ) -> ClaimResult:
        params["data"] = json.dumps(link.data)  # the json codec SQLAlchemy sets up takes text
        arguments = statement.arguments(params)
        row = None
        for _ in range(MAX_RACE_RETRIES):
            try:
                row = await driver.fetchrow(statement.sql, *arguments)
            except asyncpg.UniqueViolationError:
                # A single-use link's first use that lost a race (above): the winner's
                # row is committed, so the next run is a refusal (and so is running
                # out of runs).
                row = None
                continue
            assert row is not None
            if row["revoked"] or row["use"] is not None or row["existed"]:
                break
        if row is None or row["use"] is None:
            return ClaimResult(revoked=bool(row is not None and row["revoked"]), redemption=None)
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

    async def outbox_work(self, now: datetime) -> OutboxWork:
        statement = self._outbox_work
        async with self.driver() as driver:
            with self._tracing.statement(self._engine, "outbox_work", statement.sql):
                row = await driver.fetchrow(statement.sql, *statement.arguments({"now": now}))
        assert row is not None
        return OutboxWork(due=row["due"], abandoned=row["abandoned"])

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
        where = target.condition
        return text(
            f"DELETE FROM {target.table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {target.table} WHERE {where} LIMIT :n)) AND {where}"
        ).bindparams(bindparam("cutoff", type_=UTCDateTime))
