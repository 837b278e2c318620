"""Deleting state that can no longer matter (DESIGN.md, idea 4: state is bounded).

What goes, and when (``now`` is a parameter, so tests and operators can move it):

- ``claims`` of single links, once the link has expired: an expired link is
  refused on its signature alone, so its counter can no longer matter.
  Once-key budgets (``expires_at`` NULL) are never deleted: a once key may
  be used by links minted at any time.
- ``revocations`` and ``subject_revocations``, once every link they could
  refuse has expired (their ``expires_at``: ``revoked_at`` + the longest
  lifetime a link can have; see ``service.lifecycle``).
- ``redemptions`` older than ``REDEMPTION_RETENTION_DAYS``, with their
  delivery jobs (``ON DELETE CASCADE``).

Rows that expire by time are kept ``CLOCK_SKEW_GRACE`` longer, so a process
whose clock lags a little behind the purging one never finds the counter of
a link it still considers valid gone (which would grant that link new uses).

Deletion runs in batches of at most ``batch_size`` rows, each its own short
transaction located by an index range scan, so purge never holds many locks
or a long transaction, however much has piled up. On PostgreSQL one process
at a time purges: the run holds a session advisory lock, and a process that
cannot take it skips the run. SQLite has one writer anyway.

``PeriodicPurge`` runs it in the background of every service process.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db import is_unavailable
from service.models import UTCDateTime

log = logging.getLogger(__name__)

BATCH_SIZE = 5000
CLOCK_SKEW_GRACE = timedelta(minutes=5)
ADVISORY_LOCK_KEY = 0x616C_7075_7267_6531  # "alpurge1": one purge per database
INTERVAL_JITTER = 0.2  # processes started together drift apart


@dataclass(frozen=True, slots=True)
class Target:
    """One kind of row to delete: ``table`` rows whose ``column`` is before a cutoff."""

    table: str
    column: str


CLAIMS = Target("claims", "expires_at")
REVOCATIONS = Target("revocations", "expires_at")
SUBJECT_REVOCATIONS = Target("subject_revocations", "expires_at")
REDEMPTIONS = Target("redemptions", "redeemed_at")


def _batch_statement(target: Target, dialect: str) -> TextClause:
    """Delete up to ``:n`` rows before ``:cutoff``, found through the column's index.

    Rows are addressed by their physical id (PostgreSQL ``ctid``, SQLite
    ``rowid``): ``= ANY(ARRAY(…))`` makes PostgreSQL fetch them with a TID
    scan instead of joining the whole table. The outer condition is checked
    again, so a row changed since the inner select is left alone.
    """
    where = f"{target.column} < :cutoff"
    if dialect == "postgresql":
        source = (
            f"DELETE FROM {target.table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {target.table} WHERE {where} LIMIT :n)) AND {where}"
        )
    else:
        source = (
            f"DELETE FROM {target.table} WHERE rowid IN ("
            f"SELECT rowid FROM {target.table} WHERE {where} LIMIT :n) AND {where}"
        )
    return text(source).bindparams(bindparam("cutoff", type_=UTCDateTime))


@dataclass(slots=True)
class PurgeReport:
    """What one run deleted. ``skipped``: another process held the purge lock."""

    claims: int = 0
    revocations: int = 0
    subject_revocations: int = 0
    redemptions: int = 0
    batches: int = 0
    largest_batch: int = 0
    longest_batch_seconds: float = 0.0
    skipped: bool = False
    batch_sizes: list[int] = field(default_factory=list, repr=False)

    @property
    def deleted(self) -> int:
        return self.claims + self.revocations + self.subject_revocations + self.redemptions

    def summary(self) -> dict[str, object]:
        summary = asdict(self)
        del summary["batch_sizes"]
        return summary


async def purge(
    engine: AsyncEngine,
    now: datetime,
    retention: timedelta,
    batch_size: int = BATCH_SIZE,
) -> PurgeReport:
    """Delete what can no longer matter at ``now``, in batches of at most ``batch_size``."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    dialect = engine.dialect.name
    cutoffs = {
        CLAIMS: now - CLOCK_SKEW_GRACE,
        REVOCATIONS: now - CLOCK_SKEW_GRACE,
        SUBJECT_REVOCATIONS: now - CLOCK_SKEW_GRACE,
        REDEMPTIONS: now - retention,
    }
    async with engine.connect() as conn:
        if not await _try_lock(conn, dialect):
            return PurgeReport(skipped=True)
        try:
            report = PurgeReport()
            for target, cutoff in cutoffs.items():
                statement = _batch_statement(target, dialect)
                deleted = await _delete_in_batches(conn, statement, cutoff, batch_size, report)
                setattr(report, target.table, deleted)
        except BaseException:
            # Dropping the connection ends its session, and with it the lock.
            await conn.invalidate()
            raise
        await _unlock(conn, dialect)
    return report


async def _delete_in_batches(
    conn: AsyncConnection,
    statement: TextClause,
    cutoff: datetime,
    batch_size: int,
    report: PurgeReport,
) -> int:
    total = 0
    while True:
        started = time.perf_counter()
        result = await conn.execute(statement, {"cutoff": cutoff, "n": batch_size})
        await conn.commit()
        elapsed = time.perf_counter() - started
        deleted = result.rowcount
        report.batches += 1
        report.batch_sizes.append(deleted)
        report.largest_batch = max(report.largest_batch, deleted)
        report.longest_batch_seconds = max(report.longest_batch_seconds, round(elapsed, 4))
        total += deleted
        if deleted < batch_size:
            return total
        await asyncio.sleep(0)  # let the process's requests through between batches


async def _try_lock(conn: AsyncConnection, dialect: str) -> bool:
    if dialect != "postgresql":
        return True
    statement = text("SELECT pg_try_advisory_lock(:key)")
    locked = bool((await conn.execute(statement, {"key": ADVISORY_LOCK_KEY})).scalar_one())
    await conn.commit()
    return locked


async def _unlock(conn: AsyncConnection, dialect: str) -> None:
    if dialect != "postgresql":
        return
    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
    await conn.commit()


class PeriodicPurge:
    """Purges every ``interval`` seconds (with jitter) in the background of a process.

    The first run waits a full interval, so short-lived processes (and tests)
    never purge; ``interval`` 0 turns it off. Failures are logged and the
    next run tries again.
    """

    def __init__(self, engine: AsyncEngine, interval: float, retention: timedelta) -> None:
        self._engine = engine
        self._interval = interval
        self._retention = retention
        self._task: asyncio.Task[None] | None = None

    def start(self) -> PeriodicPurge:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="periodic-purge")
        return self

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval * (1 + INTERVAL_JITTER * random.random()))
            await self.run_once()

    async def run_once(self) -> None:
        try:
            report = await purge(self._engine, datetime.now(UTC), self._retention)
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("purge failed")
            else:
                log.warning("purge skipped: database unavailable (%s)", type(exc).__name__)
            return
        if report.deleted:
            log.info("purged expired state: %s", report.summary())
