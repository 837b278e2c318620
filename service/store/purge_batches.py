"""Purge's batches on both databases: by a column's index, or walking the audit log.

Most targets are found through an index of their time column (the store's
``_batch_statement``). The audit log has none on ``redeemed_at`` (migration
0008: every first use wrote an entry to it, for purge alone), so its batches
walk the primary key, ``seq`` (``Walk``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.models import UTCDateTime
from service.store import PurgeTarget

# Below every ``seq`` (both databases number rows from 1): where each run's walk starts.
START = 0


def _typed(source: str) -> TextClause:
    return text(source).bindparams(bindparam("cutoff", type_=UTCDateTime))


@dataclass(frozen=True, slots=True)
class Walk:
    """The statements of one walked target's batch. What a walk guarantees:

    A row's ``redeemed_at`` is its request's ``now``, taken before the claim waited
    for a connection; its ``seq`` is drawn at the insert. So ``seq`` follows time
    only nearly: a row may be older than rows before it by up to D, the longest a
    claim waits and runs (seconds: the line and the pool, ``POOL_TIMEOUT_SECONDS``
    each, and the statement) plus the clock difference between the processes
    (purge already allows them ``CLOCK_SKEW_GRACE``, 5 minutes).

    A batch takes the next ``limit`` rows in ``seq`` order after where the walk
    stands (a range of the primary key) and deletes those of them before the
    cutoff; the walk then stands after them. It ends at a batch that holds no row
    before the cutoff, or no row. Hence:

    - a row at or after the cutoff is never deleted: the delete states the cutoff;
    - an old row behind newer ones (slightly out of order, or written by a process
      whose clock runs ahead) is not skipped while its batch holds other old rows;
    - old rows behind a whole batch of newer rows wait for a later run. They follow
      that batch's first row, which is after the cutoff, so they are within D of
      it: every row older than the cutoff by more than D goes in every run, and the
      log keeps a row for the retention window plus at most D and one interval;
    - a row whose insert commits after the walk passed its ``seq`` (drawn before
      the walk's batch, committed after it) is the next run's: each run starts
      from the first row.

    Cost: a run reads the rows it deletes, the newer rows among them and one
    batch of newer rows where it ends (``limit`` rows when nothing is old), each
    batch a range of the primary key; the counters for purged claims read the
    same range. Its first batch also steps over the primary key's entries of rows
    earlier runs deleted that VACUUM has not removed yet.
    """

    window: TextClause  # the next batch's last ``seq`` and how many of it are old
    delete: TextClause
    counters: TextClause | None  # for claims among the rows to delete (``carries_claims``)

    @classmethod
    def of(cls, target: PurgeTarget) -> Walk:
        key, table, old = target.walked_by, target.table, target.condition
        assert key is not None
        window = (
            f"SELECT max({key}) AS last, sum(CASE WHEN {old} THEN 1 ELSE 0 END) AS old"
            f" FROM (SELECT {key}, {target.column} FROM {table} WHERE {key} > :after"
            f" ORDER BY {key} LIMIT :n) AS batch"
        )
        in_batch = f"{key} > :after AND {key} <= :last AND {old}"
        return cls(
            window=_typed(window),
            delete=_typed(f"DELETE FROM {table} WHERE {in_batch}"),
            counters=COUNTERS_FOR_PURGED_CLAIMS if target.carries_claims else None,
        )


walk_of = cache(Walk.of)  # one set of statements per target, built once


class Batches:
    """The purge's connection (``PurgeBatches``): one transaction per batch."""

    def __init__(
        self, conn: AsyncConnection, statement: Callable[[PurgeTarget], TextClause]
    ) -> None:
        self._conn = conn
        self._statement = statement
        # (walked target, cutoff) → the ``seq`` its walk has passed, in this run
        self._walked: dict[tuple[PurgeTarget, datetime], int] = {}

    async def delete_batch(self, target: PurgeTarget, cutoff: datetime, limit: int) -> int:
        if target.walked_by is not None:
            deleted = await self._walk(target, cutoff, limit)
        else:
            bounds = {"cutoff": cutoff, "n": limit}
            deleted = int((await self._conn.execute(self._statement(target), bounds)).rowcount)
        await self._conn.commit()
        return deleted

    async def _walk(self, target: PurgeTarget, cutoff: datetime, limit: int) -> int:
        walk = walk_of(target)
        after = self._walked.get((target, cutoff), START)
        bounds = {"cutoff": cutoff, "after": after, "n": limit}
        batch = (await self._conn.execute(walk.window, bounds)).one()
        if not batch.old:
            return 0  # the walk ends here (this batch stays the next call's)
        bounds["last"] = batch.last
        if walk.counters is not None:
            await self._conn.execute(walk.counters, bounds)
        deleted = (await self._conn.execute(walk.delete, bounds)).rowcount
        self._walked[target, cutoff] = batch.last
        return int(deleted)


# Before audit rows older than ``:cutoff`` go (those of the walk's batch, between
# ``:after`` and ``:last``), the single-use links they are the claim of (and that may
# still be used: the link expires after the cutoff) get a used-up counter, in the same
# transaction as the delete. Rarely any rows: only links living longer than the
# retention window.
COUNTERS_FOR_PURGED_CLAIMS = _typed("""
INSERT INTO claims
    (client_id, key, uses, issued, max_uses, expires_at, first_used_at, last_used_at)
SELECT client_id, claim_key, 1, use, 1, claim_expires_at, redeemed_at, redeemed_at
FROM redemptions
WHERE seq > :after AND seq <= :last AND redeemed_at < :cutoff
  AND claim_expires_at IS NOT NULL AND claim_expires_at >= :cutoff
ON CONFLICT (client_id, key) DO UPDATE
SET uses = CASE WHEN claims.uses > 1 THEN claims.uses ELSE 1 END,
    issued = CASE WHEN excluded.issued > claims.issued THEN excluded.issued ELSE claims.issued END
""")
