"""Deleting state that can no longer matter (DESIGN.md, idea 4: state is bounded).

What goes, and when (``now`` is a parameter, so tests and operators can move it):

- ``claims`` of single links, once the link has expired: an expired link is
  refused on its signature alone, so its counter can no longer matter.
  Once-key budgets (``expires_at`` NULL) are never deleted: a once key may
  be used by links minted at any time.
- ``revocations`` and ``subject_revocations``, once every link they could
  refuse has expired (their ``expires_at``: ``revoked_at`` + the longest
  lifetime a link can have; see ``service.lifecycle``).
- ``code_failures`` (wrong typed codes) of single links, once the link has
  expired, like its use counter.
- ``redemptions`` older than ``REDEMPTION_RETENTION_DAYS``, with their
  delivery jobs (``ON DELETE CASCADE``).
- ``failure_counters`` (the abuse limits' failed attempts per client
  address), once their window has ended: the next failure starts a new one.

Rows that expire by time are kept ``CLOCK_SKEW_GRACE`` longer, so a process
whose clock lags a little behind the purging one never finds the counter of
a link it still considers valid gone (which would grant that link new uses).

Deletion runs in batches of at most ``batch_size`` rows, each its own short
transaction located by an index range scan, so purge never holds many locks
or a long transaction, however much has piled up. The audit log's batches
walk its primary key (``seq``) rather than an index of ``redeemed_at``, which
every first use would write to. A row is never purged inside the window; one
a little out of order may go a run later (``service.store.purge_batches.Walk``).
One process at a time purges (``Store.purging``: on PostgreSQL a session
advisory lock; SQLite has one writer anyway); a process that cannot take the
lock skips the run.

``PeriodicPurge`` runs it in the background of every service process.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from service.errors import DatabaseUnavailable
from service.store import (
    CLAIMS,
    CODE_FAILURES,
    FAILURE_COUNTERS,
    REDEMPTIONS,
    REVOCATIONS,
    SUBJECT_REVOCATIONS,
    PurgeBatches,
    PurgeTarget,
    Store,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 5000
CLOCK_SKEW_GRACE = timedelta(minutes=5)
INTERVAL_JITTER = 0.2  # processes started together drift apart


@dataclass(slots=True)
class PurgeReport:
    """What one run deleted. ``skipped``: another process held the purge lock."""

    claims: int = 0
    revocations: int = 0
    subject_revocations: int = 0
    code_failures: int = 0
    redemptions: int = 0
    failure_counters: int = 0
    batches: int = 0
    largest_batch: int = 0
    longest_batch_seconds: float = 0.0
    skipped: bool = False
    batch_sizes: list[int] = field(default_factory=list, repr=False)

    @property
    def deleted(self) -> int:
        return (
            self.claims
            + self.revocations
            + self.subject_revocations
            + self.code_failures
            + self.redemptions
            + self.failure_counters
        )

    def summary(self) -> dict[str, object]:
        summary = asdict(self)
        del summary["batch_sizes"]
        return summary


async def purge(
    store: Store,
    now: datetime,
    retention: timedelta,
    batch_size: int = BATCH_SIZE,
) -> PurgeReport:
    """Delete what can no longer matter at ``now``, in batches of at most ``batch_size``."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoffs = {
        CLAIMS: now - CLOCK_SKEW_GRACE,
        REVOCATIONS: now - CLOCK_SKEW_GRACE,
        SUBJECT_REVOCATIONS: now - CLOCK_SKEW_GRACE,
        CODE_FAILURES: now - CLOCK_SKEW_GRACE,
        REDEMPTIONS: now - retention,
        FAILURE_COUNTERS: now - CLOCK_SKEW_GRACE,
    }
    async with store.purging() as batches:
        if batches is None:
            return PurgeReport(skipped=True)
        report = PurgeReport()
        for target, cutoff in cutoffs.items():
            deleted = await _delete_in_batches(batches, target, cutoff, batch_size, report)
            setattr(report, target.table, deleted)
    return report


async def _delete_in_batches(
    batches: PurgeBatches,
    target: PurgeTarget,
    cutoff: datetime,
    batch_size: int,
    report: PurgeReport,
) -> int:
    total = 0
    while True:
        started = time.perf_counter()
        deleted = await batches.delete_batch(target, cutoff, batch_size)
        elapsed = time.perf_counter() - started
        report.batches += 1
        report.batch_sizes.append(deleted)
        report.largest_batch = max(report.largest_batch, deleted)
        report.longest_batch_seconds = max(report.longest_batch_seconds, round(elapsed, 4))
        total += deleted
        if target.finished(deleted, batch_size):
            return total
        await asyncio.sleep(0)  # let the process's requests through between batches


class PeriodicPurge:
    """Purges every ``interval`` seconds (with jitter) in the background of a process.

    The first run waits a full interval, so short-lived processes (and tests)
    never purge; ``interval`` 0 turns it off. Failures are logged and the
    next run tries again.
    """

    def __init__(self, store: Store, interval: float, retention: timedelta) -> None:
        self._store = store
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
            report = await purge(self._store, datetime.now(UTC), self._retention)
        except DatabaseUnavailable as exc:
            log.warning("purge skipped: database unavailable (%s)", exc.cause_name)
            return
        except Exception:
            log.exception("purge failed")
            return
        if report.deleted:
            log.info("purged expired state: %s", report.summary())
