"""What both stores share: the engine's error boundary and the statements written alike.

The boundary: errors that mean "the database cannot be reached or dropped the
connection" become ``DatabaseUnavailable`` (the driver's error kept as its
``__cause__``) at the two places SQLAlchemy lets them through, so every
statement and every session on the engine is covered:

- the ``handle_error`` event, for errors of a statement (and of a connection
  SQLAlchemy opens for one);
- the pool's checkout (``GuardedPool``), for a pool with no connection free
  within its timeout and for a server that refuses or does not answer a new
  connection, which reach no statement.

``unavailable`` is the one answer to the question; the PostgreSQL store adds
the errors of its direct asyncpg line (``postgres.py``).

``SqlStore`` holds the operations whose SQLAlchemy statements both dialects
run alike; ``PostgresStore`` and ``SqliteStore`` add their own claim, peek,
purge batches and locks.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Select,
    TextClause,
    and_,
    bindparam,
    case,
    delete,
    event,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection
from sqlalchemy.sql.elements import ColumnElement

from service import metrics, random_ids
from service.errors import DatabaseUnavailable
from service.models import (
    ALL_ACTIONS,
    NOT_SINGLE_USE,
    SINGLE_USE,
    Claim,
    CodeFailure,
    Delivery,
    FailureCounter,
    Redemption,
    Revocation,
    SubjectRevocation,
    UTCDateTime,
)
from service.store import (
    AttemptOutcome,
    AuditEntry,
    ClaimResult,
    DeliveryState,
    Exchange,
    FailureCount,
    Filters,
    Job,
    LinkState,
    OutboxWork,
    PurgeTarget,
    RedemptionRecord,
    Requeued,
    Usage,
    Via,
)
from service.store.purge_batches import Batches
from service.tokens import LinkClaims, link_claim_key

# SQLSTATE classes of a server or connection that is gone: 08 connection
# exception (asyncpg's "connection was closed in the middle of operation"
# arrives as a plain DBAPIError), 57P shutdown or cannot connect now, 53300
# too many connections.
UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DECIDING = "deciding"  # a sync job: the redeeming request awaits the receiver's verdict


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (else it is a bug, or a refusal)."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or unavailable_sqlstate(exc.orig)
    return False


def unavailable_sqlstate(exc: BaseException | None) -> bool:
    """A driver error whose SQLSTATE says the server or the connection is gone."""
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES)


def _on_error(context: ExceptionContext) -> BaseException | None:
    """``handle_error``: the replacement SQLAlchemy raises (``from`` the driver's error)."""
    if not isinstance(context.original_exception, Exception):
        return None  # cancellation (SQLAlchemy counts it as a disconnect): never an outage
    raised = context.sqlalchemy_exception or context.original_exception
    if context.is_disconnect or unavailable(raised):
        return DatabaseUnavailable()
    return None


# What a wait for a connection is reported to, in seconds: the histogram
# ``action_links_db_pool_wait_seconds`` unless a caller times its waits itself.
WaitObserver = Callable[[float], None]

# When the caller began waiting for a connection, if before the pool's own checkout
# (the PostgreSQL store's line), and what the wait is reported to: SQLAlchemy runs the
# checkout in a greenlet that shares the caller's context, so the pool sees it.
_asked: ContextVar[tuple[float, WaitObserver] | None] = ContextVar(
    "action_links_pool_asked", default=None
)


@contextmanager
def waiting_since(asked_at: float, observe: WaitObserver) -> Iterator[None]:
    """Checkouts in this block count their wait from ``asked_at`` (``time.perf_counter``)
    and report it to ``observe``."""
    token = _asked.set((asked_at, observe))
    try:
        yield
    finally:
        _asked.reset(token)


class GuardedPool(AsyncAdaptedQueuePool):
    """The pool, whose checkout failures are ``DatabaseUnavailable`` when they mean so, and
    whose every checkout is timed (``action_links_db_pool_wait_seconds``), failed ones too.
    A store whose driver raises errors of its own sets ``unavailable`` to what reads them."""

    unavailable = staticmethod(unavailable)

    def connect(self) -> PoolProxiedConnection:
        asked = _asked.get()
        started, observe = (time.perf_counter(), metrics.pool_waited) if asked is None else asked
        try:
            return super().connect()
        except Exception as exc:
            if self.unavailable(exc):
                raise DatabaseUnavailable() from exc
            raise
        finally:
            observe(time.perf_counter() - started)


def guard(engine: AsyncEngine) -> AsyncEngine:
    """Install the statement half of the boundary (the pool half is ``GuardedPool``)."""
    assert isinstance(engine.sync_engine.pool, GuardedPool), "create it with GuardedPool"
    event.listen(engine.sync_engine, "handle_error", _on_error, retval=True)
    return engine


# The statuses as literals in the SQL, not parameters: even a generic plan of a prepared
# statement then reads the partial indexes ``ix_deliveries_due`` and ``ix_deliveries_deciding``
# (as ``OUTBOX_WORK_SQL`` in postgres.py, the same conditions on the direct line).
_PENDING: ColumnElement[str] = literal_column(f"'{PENDING}'")
_DECIDING: ColumnElement[str] = literal_column(f"'{DECIDING}'")


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """A job ``lease_due`` takes at ``now``: pending, due, and leased by nobody alive."""
    return (
        Delivery.status == _PENDING,
        Delivery.next_attempt_at <= now,
        or_(Delivery.leased_until.is_(None), Delivery.leased_until < now),
    )


def _abandoned(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """A sync job whose request did not settle it within its lease (``give_back_abandoned``)."""
    return (Delivery.status == _DECIDING, Delivery.leased_until < now)


def _record(row: Any) -> RedemptionRecord:
    return RedemptionRecord(
        redemption_id=row.id,
        client_id=row.client_id,
        link_id=row.link_id,
        claim_key=row.claim_key,
        action=row.action,
        subject=row.subject,
        data=row.data,
        use=row.use,
        max_uses=row.max_uses,
        redeemed_at=row.redeemed_at,
        once_key=row.once_key,
        via=Via(row.via),
        exchanged_at=row.exchanged_at,
    )


# The counter's ``uses`` goes down, its ``issued`` does not: the next claim of a
# given-back use takes a new use number.
GIVE_BACK_USE = text(
    """
UPDATE claims SET uses = uses - 1
WHERE client_id = :client_id AND key = :claim_key AND uses > 0
"""
)


class SqlStore(ABC):
    """The operations both dialects write alike, on an engine built with ``GuardedPool``."""

    # The dialect's INSERT (PostgreSQL's and SQLite's both know ``ON CONFLICT``).
    insert: Callable[..., Any]

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = guard(engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    def kept_connections(self) -> int:
        return 0

    @abstractmethod
    def watch(self, on_change: Callable[[str | None], None]) -> None: ...

    # --- redemption --------------------------------------------------------------------

    @abstractmethod
    async def claim(
        self,
        link: LinkClaims,
        now: datetime,
        *,
        deliver: bool,
        lease: datetime | None,
        via: Via = Via.LINK,
        sync: bool = False,
    ) -> ClaimResult: ...

    @abstractmethod
    async def peek(self, link: LinkClaims, *, recorded: bool = False) -> LinkState: ...

    # --- sync redemptions: accepted, or given back ---------------------------------------
    #
    # A sync redemption's job is ``deciding`` until its request settles it: accepted
    # (``delivered``, under the job's lease) or given back (the audit row deleted,
    # its job with it by ON DELETE CASCADE, and the use returned). One whose lease
    # expired unsettled (its process died, or the database was away) is given back
    # by the sweep. Both give-backs lock the job row first, then the redemption's,
    # so they never deadlock; the sweep skips jobs a request holds.

    async def give_back(self, redemption_id: str) -> bool:
        undecided = (
            select(Delivery.redemption_id)
            .where(Delivery.redemption_id == redemption_id, Delivery.status == DECIDING)
            .with_for_update()
        )
        return await self._give_back(undecided) == 1

    async def give_back_abandoned(self, now: datetime, limit: int) -> int:
        abandoned = (
            select(Delivery.redemption_id)
            .where(*_abandoned(now))
            .order_by(Delivery.leased_until)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return await self._give_back(abandoned)

    async def _give_back(self, jobs: Select[Any]) -> int:
        """Deletes the redemptions of ``jobs`` and returns their uses, in one transaction:
        a crash leaves each give-back done or undone, never half."""
        take = (
            delete(Redemption)
            .where(Redemption.id.in_(jobs.scalar_subquery()))
            .returning(
                Redemption.client_id,
                Redemption.claim_key,
                Redemption.use,
                Redemption.redeemed_at,
                Redemption.claim_expires_at,
            )
        )
        counter_back = self._given_back_counter()
        async with self._engine.begin() as conn:
            rows = (await conn.execute(take)).all()
            for row in rows:
                key = {"client_id": row.client_id, "claim_key": row.claim_key}
                if row.claim_expires_at is None:
                    await conn.execute(GIVE_BACK_USE, key)
                    continue
                # The row was the link's claim (no counter, or one at 0 uses): a counter
                # now keeps the numbers handed out, so the next use takes a new one.
                given = {"use": row.use, "at": row.redeemed_at, "expires_at": row.claim_expires_at}
                await conn.execute(counter_back, key | given)
        return len(rows)

    def _given_back_counter(self) -> Any:
        claims = Claim.__table__
        insert = self.insert(Claim).values(
            client_id=bindparam("client_id"),
            key=bindparam("claim_key"),
            uses=0,
            issued=bindparam("use"),
            max_uses=1,
            expires_at=bindparam("expires_at", type_=UTCDateTime),
            first_used_at=bindparam("at", type_=UTCDateTime),
            last_used_at=bindparam("at", type_=UTCDateTime),
        )
        newer = insert.excluded.issued > claims.c.issued
        return insert.on_conflict_do_update(
            index_elements=["client_id", "key"],
            set_={
                "uses": case((claims.c.uses > 0, claims.c.uses - 1), else_=0),
                "issued": case((newer, insert.excluded.issued), else_=claims.c.issued),
            },
        )

    async def accept(self, job: Job, now: datetime) -> bool:
        """Marks the job delivered while it is ``deciding`` under ``job.lease``; else reads
        what became of it: still there means accepted already (only its own request
        accepts a deciding job: an earlier try whose answer was lost), gone means given
        back (by the sweep, after the lease)."""
        redemption_id = job.redemption.redemption_id
        statement = (
            update(Delivery)
            .where(
                Delivery.redemption_id == redemption_id,
                Delivery.status == DECIDING,
                Delivery.leased_until == job.lease,
            )
            .values(
                status=DELIVERED, attempts=1, leased_until=None, delivered_at=now, last_error=None
            )
        )
        status = select(Delivery.status).where(Delivery.redemption_id == redemption_id)
        async with self._engine.begin() as conn:
            if (await conn.execute(statement)).rowcount == 1:
                return True
            found = await conn.scalar(status)
        return found is not None and found != DECIDING

    # --- finishing the flow in the caller's app -----------------------------------------

    async def exchange(
        self, client_id: str, redemption_id: str, now: datetime, since: datetime
    ) -> Exchange:
        """One ``UPDATE … WHERE exchanged_at IS NULL``, committed on its own: of any number
        of concurrent exchanges of one redemption, the database lets exactly one change
        the row. The read after it sees that change, or the one that beat it."""
        statement = (
            update(Redemption)
            .where(
                Redemption.client_id == client_id,
                Redemption.id == redemption_id,
                Redemption.exchanged_at.is_(None),
                Redemption.redeemed_at > since,
            )
            .values(exchanged_at=now)
        )
        read = self._audit().where(
            Redemption.client_id == client_id, Redemption.id == redemption_id
        )
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            won = (await conn.execute(statement)).rowcount == 1
            row = (await conn.execute(read)).one_or_none()
        return Exchange(bool(won), None if row is None else self._entry(row))

    async def code_failures(self, client_id: str, link_id: str) -> int:
        statement = select(CodeFailure.failures).where(
            CodeFailure.client_id == client_id, CodeFailure.link_id == link_id
        )
        async with self._engine.connect() as conn:
            failures = await conn.scalar(statement)
        return int(failures or 0)

    async def add_code_failure(
        self, client_id: str, link_id: str, expires_at: datetime, limit: int
    ) -> int | None:
        """One upsert: the first failure inserts 1, later ones add 1 while below ``limit``
        (``DO UPDATE … WHERE``: at the limit no row changes and none is returned)."""
        table = CodeFailure.__table__
        insert = self.insert(CodeFailure).values(
            client_id=client_id, link_id=link_id, failures=1, expires_at=expires_at
        )
        statement = insert.on_conflict_do_update(
            index_elements=["client_id", "link_id"],
            set_={"failures": table.c.failures + 1},
            where=table.c.failures < limit,
        ).returning(table.c.failures)
        async with self._engine.begin() as conn:
            failures = (await conn.execute(statement)).scalar_one_or_none()
        return None if failures is None else int(failures)

    # --- lifecycle ---------------------------------------------------------------------

    async def revoke_link(
        self, client_id: str, link_id: str, revoked_at: datetime, expires_at: datetime
    ) -> None:
        statement = (
            self.insert(Revocation)
            .values(
                client_id=client_id, link_id=link_id, revoked_at=revoked_at, expires_at=expires_at
            )
            .on_conflict_do_nothing(index_elements=["client_id", "link_id"])
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)

    async def revoke_subject(
        self,
        client_id: str,
        subject: str,
        action: str,
        revoked_at: datetime,
        expires_at: datetime,
    ) -> datetime:
        table = SubjectRevocation.__table__
        insert = self.insert(SubjectRevocation).values(
            client_id=client_id,
            subject=subject,
            action=action,
            revoked_at=revoked_at,
            expires_at=expires_at,
        )
        newer = insert.excluded.revoked_at > table.c.revoked_at
        statement = insert.on_conflict_do_update(
            index_elements=["client_id", "subject", "action"],
            set_={
                "revoked_at": case((newer, insert.excluded.revoked_at), else_=table.c.revoked_at),
                "expires_at": case((newer, insert.excluded.expires_at), else_=table.c.expires_at),
            },
        ).returning(table.c.revoked_at)
        async with self._engine.begin() as conn:
            stored: datetime = (await conn.execute(statement)).scalar_one()
        return stored

    async def usage(self, client_id: str, link_id: str, claim_key: str) -> Usage:
        """One read: the use counter ``claim_key`` if it exists, else the link's audit rows.

        The counter is the authority while it lives (it outlasts the audit
        retention window for long-lived links); once purged, or for a link that
        draws on a once-key budget, the audit rows of the link id tell its uses.
        """
        rows = union_all(
            *(select(Redemption.redeemed_at).where(of) for of in of_link(client_id, link_id))
        ).subquery()
        audit = select(
            func.count().label("n"),
            func.min(rows.c.redeemed_at).label("first_at"),
            func.max(rows.c.redeemed_at).label("last_at"),
        ).subquery()
        revoked = exists().where(Revocation.client_id == client_id, Revocation.link_id == link_id)
        statement = select(
            audit.c.n,
            audit.c.first_at,
            audit.c.last_at,
            Claim.uses,
            Claim.first_used_at,
            Claim.last_used_at,
            revoked.label("revoked"),
        ).select_from(
            audit.outerjoin(Claim, and_(Claim.client_id == client_id, Claim.key == claim_key))
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(statement)).one()
        if row.uses is not None:
            return Usage(row.uses, row.first_used_at, row.last_used_at, bool(row.revoked))
        return Usage(int(row.n), row.first_at, row.last_at, bool(row.revoked))

    # --- audit log ---------------------------------------------------------------------

    @staticmethod
    def _audit() -> Select[Any]:
        """Redemptions with their delivery job, in the same query (``LEFT JOIN``)."""
        return select(
            *Redemption.__table__.c,
            Delivery.status,
            Delivery.attempts,
            Delivery.last_error,
        ).outerjoin(Delivery, Delivery.redemption_id == Redemption.id)

    @staticmethod
    def _entry(row: Any) -> AuditEntry:
        # A sync job awaiting its receiver's verdict is, to the client, pending.
        status = PENDING if row.status == DECIDING else row.status
        delivery = DeliveryState(status, row.attempts or 0, row.last_error)
        return AuditEntry(row.seq, _record(row), delivery)

    async def redemptions(
        self, client_id: str, filters: Filters, before_seq: int | None, limit: int
    ) -> list[AuditEntry]:
        statement = self._audit().where(Redemption.client_id == client_id)
        if filters.subject is not None:
            statement = statement.where(Redemption.subject == filters.subject)
        if filters.action is not None:
            statement = statement.where(Redemption.action == filters.action)
        if before_seq is not None:
            statement = statement.where(Redemption.seq < before_seq)
        newest = Redemption.seq.desc()
        if filters.link_id is not None:
            # A link's rows from each of its indexes (``of_link``), merged: the single-use
            # side holds one row at most, so it neither sorts nor pages (which would tempt
            # the planner to walk ``ix_redemptions_client_seq`` for the order instead).
            single, others = of_link(client_id, filters.link_id)
            pages = [
                select(statement.where(single).subquery()),
                select(statement.where(others).order_by(newest).limit(limit).subquery()),
            ]
            merged = union_all(*pages).subquery()
            statement = select(merged).order_by(merged.c.seq.desc()).limit(limit)
        else:
            statement = statement.order_by(newest).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [self._entry(row) for row in rows]

    async def redemption(self, client_id: str, redemption_id: str) -> AuditEntry | None:
        statement = self._audit().where(
            Redemption.client_id == client_id, Redemption.id == redemption_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(statement)).one_or_none()
        return None if row is None else self._entry(row)

    # --- outbox ------------------------------------------------------------------------
    #
    # A job is *leased* by writing ``leased_until``: until then nobody else
    # attempts it. The lease value doubles as the holder's token: an outcome is
    # recorded only ``WHERE leased_until = <my lease>``, so a process that
    # stalled past its lease (and lost the job to another) records nothing.
    #
    # Leasing due jobs is one statement: ``UPDATE … WHERE redemption_id IN
    # (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)``, so concurrent dispatchers on
    # PostgreSQL take disjoint batches without waiting on each other. SQLite has
    # no row locks (and drops the ``FOR UPDATE``); there the same ``UPDATE`` runs
    # under the database's single write lock, which makes it just as exclusive.

    async def outbox_work(self, now: datetime) -> OutboxWork:
        look = select(
            exists().where(*_due(now)).label("due"),
            exists().where(*_abandoned(now)).label("abandoned"),
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(look)).one()
        return OutboxWork(due=bool(row.due), abandoned=bool(row.abandoned))

    async def lease_due(self, now: datetime, lease: datetime, limit: int) -> list[Job]:
        due = (
            select(Delivery.redemption_id)
            .where(*_due(now))
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        take = (
            update(Delivery)
            .where(Delivery.redemption_id.in_(due.scalar_subquery()))
            .values(leased_until=lease)
            .returning(Delivery.redemption_id, Delivery.attempts)
        )
        redemptions = Redemption.__table__
        async with self._engine.begin() as conn:
            attempts = {row.redemption_id: row.attempts for row in await conn.execute(take)}
            if not attempts:
                return []
            rows = await conn.execute(select(redemptions).where(redemptions.c.id.in_(attempts)))
            return [Job(_record(row), attempts[row.id], lease) for row in rows]

    async def record_attempt(self, job: Job, now: datetime, outcome: AttemptOutcome) -> bool:
        values: dict[str, Any] = {
            "attempts": Delivery.attempts + 1,
            "leased_until": None,
            "last_error": outcome.error,
        }
        if outcome.delivered:
            values.update(status=DELIVERED, delivered_at=now)
        elif outcome.retry_at is None:
            values["status"] = FAILED
        else:
            values["next_attempt_at"] = outcome.retry_at
        statement = (
            update(Delivery)
            .where(
                Delivery.redemption_id == job.redemption.redemption_id,
                Delivery.status == PENDING,
                Delivery.leased_until == job.lease,
            )
            .values(**values)
        )
        # One statement, atomic by itself: autocommit spares the BEGIN and COMMIT
        # round trips on every inline delivery of a redemption.
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            result = await conn.execute(statement)
        return bool(result.rowcount == 1)

    async def release(self, leases: Mapping[str, datetime]) -> None:
        if not leases:
            return
        async with self._engine.begin() as conn:
            for redemption_id, lease in leases.items():
                await conn.execute(
                    update(Delivery)
                    .where(Delivery.redemption_id == redemption_id, Delivery.leased_until == lease)
                    .values(leased_until=None)
                )

    async def requeue(self, client_id: str, redemption_id: str, now: datetime) -> Requeued:
        # An attempt in flight keeps its lease: no other process may send the job
        # meanwhile (one process per job at a time), and its outcome is still recorded.
        # A sync job still deciding is its request's: it is accepted or given back.
        in_flight = Delivery.leased_until > now
        statement = (
            update(Delivery)
            .where(
                Delivery.redemption_id == redemption_id,
                Delivery.client_id == client_id,
                Delivery.status != DECIDING,
            )
            .values(
                status=PENDING,
                attempts=0,
                next_attempt_at=now,
                leased_until=case((in_flight, Delivery.leased_until), else_=None),
                delivered_at=None,
            )
        )
        known = select(Redemption.id, Delivery.status).outerjoin(
            Delivery, Delivery.redemption_id == Redemption.id
        )
        known = known.where(Redemption.id == redemption_id, Redemption.client_id == client_id)
        async with self._engine.begin() as conn:
            if (await conn.execute(statement)).rowcount == 1:
                return Requeued.REQUEUED
            found = (await conn.execute(known)).first()
        if found is None:
            return Requeued.UNKNOWN
        return Requeued.DECIDING if found.status == DECIDING else Requeued.NO_WEBHOOK

    async def delivery_backlog(
        self,
        timeout: float,  # noqa: ASYNC109 - the server is told the limit too
    ) -> tuple[int, datetime | None]:
        """Reads the pending rows only (a partial index covers them)."""
        query = select(func.count(), func.min(Delivery.created_at)).where(
            Delivery.status == PENDING
        )
        try:
            async with asyncio.timeout(timeout), self._engine.connect() as conn:
                await self._limit_statement_time(conn, timeout)
                pending, oldest = (await conn.execute(query)).one()
        except TimeoutError:
            raise DatabaseUnavailable(f"no answer within {timeout:g} s") from None
        return int(pending), oldest

    @abstractmethod
    async def _limit_statement_time(self, conn: AsyncConnection, seconds: float) -> None:
        """Let the server stop a read the caller will not wait for (where it can)."""

    # --- abuse limits ------------------------------------------------------------------

    async def count_failure(
        self, scope: str, address: str, now: datetime, window: timedelta
    ) -> FailureCount:
        """``INSERT … ON CONFLICT DO UPDATE … RETURNING``, alike on both databases: the
        ``SET`` expressions all read the row as it was, so a window that has ended
        restarts as a whole (count, start and end) or not at all."""
        table = FailureCounter.__table__
        insert = self.insert(FailureCounter).values(
            scope=scope, address=address, failures=1, window_start=now, expires_at=now + window
        )
        ended = table.c.expires_at <= insert.excluded.window_start
        statement = insert.on_conflict_do_update(
            index_elements=["scope", "address"],
            set_={
                "failures": case((ended, 1), else_=table.c.failures + 1),
                "window_start": case(
                    (ended, insert.excluded.window_start), else_=table.c.window_start
                ),
                "expires_at": case((ended, insert.excluded.expires_at), else_=table.c.expires_at),
            },
        ).returning(table.c.failures, table.c.expires_at)
        async with self._engine.connect() as conn:  # one statement: autocommit
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            row = (await conn.execute(statement)).one()
        return FailureCount(row.failures, row.expires_at)

    # --- purge -------------------------------------------------------------------------

    @asynccontextmanager
    async def purging(self) -> AsyncIterator[Batches | None]:
        async with self._engine.connect() as conn:
            if not await self._try_lock(conn):
                yield None
                return
            try:
                yield Batches(conn, self._batch_statement)
            except BaseException:
                # Dropping the connection ends its session, and with it any lock.
                await conn.invalidate()
                raise
            await self._unlock(conn)

    @abstractmethod
    async def _try_lock(self, conn: AsyncConnection) -> bool:
        """Take the one-purge-at-a-time lock; False when another process holds it."""

    @abstractmethod
    async def _unlock(self, conn: AsyncConnection) -> None:
        """Give back what ``_try_lock`` took."""

    @abstractmethod
    def _batch_statement(self, target: PurgeTarget) -> TextClause:
        """Delete up to ``:n`` rows before ``:cutoff``, found through the column's index
        (a target without one is walked instead: ``purge_batches.Walk``)."""


# --- SQL both claims and peeks are made of -----------------------------------------------


def of_link(client_id: str, link_id: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The conditions of a link's audit rows, one per index that holds them (0007).

    A single-use link's row (at most one) is in ``ux_redemptions_single_use``,
    under its claim key; every other row in ``ix_redemptions_client_link_seq``.
    The conditions are written as the indexes' own, so each side plans on its
    index (on both databases). A query by link id reads both and adds them up.
    """
    return (
        and_(
            Redemption.client_id == client_id,
            Redemption.claim_key == link_claim_key(link_id),
            Redemption.link_id == link_id,
            text(SINGLE_USE),
        ),
        and_(
            Redemption.client_id == client_id,
            Redemption.link_id == link_id,
            text(NOT_SINGLE_USE),
        ),
    )


def revoked_sql(of: str = ":", subqueries: str = "") -> str:
    """Whether a link is revoked: its own revocation, or one of its subject for its action
    (or all) after it was issued. ``of`` prefixes the link's fields (``:`` for the
    statements' parameters, ``claim.`` for a row's columns); ``subqueries`` ends both
    probes (``OFFSET 0`` keeps them correlated probes in ``claim_batch.py``)."""
    return f"""
    EXISTS (SELECT 1 FROM revocations
            WHERE client_id = {of}client_id AND link_id = {of}link_id {subqueries})
    OR EXISTS (SELECT 1 FROM subject_revocations
               WHERE client_id = {of}client_id AND subject = {of}subject
                 AND action IN ({of}action, '{ALL_ACTIONS}') AND revoked_at > {of}issued_at
               {subqueries})
"""


REVOKED = revoked_sql()

_PEEK = """
SELECT counter.uses AS uses, counter.max_uses AS budget, ({revoked}) AS revoked,
       {audited} AS audited, {carried} AS carried
FROM (SELECT 1) AS one
LEFT JOIN claims AS counter ON counter.client_id = :client_id AND counter.key = :claim_key
"""
# Without a counter, a single-use link's audit row is its claim (migration 0006): one
# probe of ``ux_redemptions_single_use`` (whose condition this repeats, so that the
# planner may use it).
_CARRIED = f"""CASE WHEN counter.uses IS NULL THEN
    (SELECT count(*) FROM redemptions
     WHERE client_id = :client_id AND claim_key = :claim_key AND {SINGLE_USE})
END"""
# Counted only for a link without a counter (a subquery in an untaken CASE
# branch is never run), and only when asked: the gate's reads never use it. A link's
# rows are counted in both of its indexes (``of_link``).
_AUDITED = f"""CASE WHEN counter.uses IS NULL THEN
    (SELECT count(*) FROM redemptions
     WHERE client_id = :client_id AND claim_key = :link_key AND link_id = :link_id
       AND {SINGLE_USE})
    + (SELECT count(*) FROM redemptions
       WHERE client_id = :client_id AND link_id = :link_id AND {NOT_SINGLE_USE})
END"""


def peek_sql(recorded: bool) -> str:
    """One read: the counter, the revocations and (``recorded``) the audit rows of a link."""
    return _PEEK.format(revoked=REVOKED, audited=_AUDITED if recorded else "NULL", carried=_CARRIED)


def peek_params(link: LinkClaims) -> dict[str, object]:
    return {
        "client_id": link.client_id,
        "link_id": link.link_id,
        "claim_key": link.claim_key,
        "link_key": link_claim_key(link.link_id),
        "action": link.action,
        "subject": link.subject,
        "issued_at": link.issued_at,
    }


def link_state(row: Mapping[Any, Any]) -> LinkState:
    """The state of a peek's row (``uses``, ``budget``, ``revoked``, ``audited``,
    ``carried``: without a counter, the audit rows that are a single-use link's claim)."""
    uses = row["uses"]
    if uses is not None:
        return LinkState(uses, bool(row["revoked"]), uses, row["budget"])
    carried = int(row["carried"] or 0)
    audited = row["audited"]
    return LinkState(
        uses=carried,
        revoked=bool(row["revoked"]),
        recorded_uses=int(audited) if audited is not None else carried,
        budget=None,
    )


def new_redemption_id() -> str:
    """A redemption's id: the time in milliseconds (11 hex digits), then 96 random bits.

    Random ids land all over ``uq_redemptions_id``: after each checkpoint nearly
    every insert into a large audit table wrote the whole leaf page it touched to
    the WAL (a full-page image: ~1.3 KB per first use at 100,000 rows, more than
    the rest of the row's index entries together; bench/README.md). Ids that grow
    with time are appended at the index's right edge, as ``seq`` is. Fixed-width
    hex sorts the same in every collation, so the order holds whatever the
    database's; the random part is what it was, so ids stay unguessable.
    """
    # os.urandom as secrets reads it, in batches: no getrandom() per redemption.
    return f"{time.time_ns() // 1_000_000:011x}{random_ids.token_urlsafe(12)}"


def claim_params(
    link: LinkClaims,
    now: datetime,
    deliver: bool,
    lease: datetime | None,
    via: Via,
    sync: bool,
) -> dict[str, object]:
    return {
        **peek_params(link),
        "once_key": link.once_key,
        "via": via.value,
        "data": link.data,
        "expires_at": None if link.once_key is not None else link.expires_at_datetime,
        "max_uses": link.max_uses,
        "now": now,
        "deliver": deliver,
        "job_status": DECIDING if sync else PENDING,
        "leased_until": lease,
        "redemption_id": new_redemption_id(),
    }


def claimed(
    link: LinkClaims, redemption_id: str, now: datetime, use: int, via: Via
) -> RedemptionRecord:
    """The redemption a claim of ``link`` at ``now`` just recorded, as use number ``use``."""
    return RedemptionRecord(
        redemption_id=redemption_id,
        client_id=link.client_id,
        link_id=link.link_id,
        claim_key=link.claim_key,
        action=link.action,
        subject=link.subject,
        data=link.data,
        use=use,
        max_uses=link.max_uses,
        redeemed_at=now,
        once_key=link.once_key,
        via=via,
    )
