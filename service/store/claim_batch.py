"""First uses that wait in line for a connection, claimed together in one statement.

Under load, redemptions wait in the direct line (``postgres._Turn``) for one of
the pool's connections. A single-use link's claim then costs PostgreSQL far
more than its rows: one statement locks, opens and sets up four tables and ten
indexes and commits once, whatever it inserts, and that fixed part is most of
its CPU (bench/README.md, "The claim's instructions in PostgreSQL"). So the
claims of single-use links that find the line full join a queue instead, and
whichever turn gets the next place in line claims everything queued in one
statement (``BATCH_CLAIM_SQL``): the same probes and the same audit row per
link, one plan, one commit. A claim that finds a place free runs alone, as
before, so an idle service answers exactly as fast as it did.

Each link's claim keeps its promises:

- exactly once: the partial unique index decides, as for a claim alone. If
  any link of a batch is claimed by someone else meanwhile (a race across
  processes) or twice in the batch, the statement fails as a whole on that
  index and inserts nothing; every claim of the batch is then run alone, on the
  same connection, as ``PostgresStore.claim`` runs it (losers are refused).
  Rows go in in the order of their claim keys, so two batches racing for the
  same links wait on each other's rows in one order, never in a cycle;
- the audit row in the same commit as the use: the row is the claim;
- revocations: both kinds are probed per link, in the statement that inserts.

A queued claim whose request is cancelled is left out of the batch it has not
joined yet. Every claim of a batch gets the batch's failure (``DatabaseUnavailable``
when the database is gone or no connection came in time). Turns waiting for a
place stand in the same fair line as every other user of it, one at a time: a
new turn is started only when a claim is queued and none is waiting. Each claim's
wait for a connection, from when it was queued, is what the pool-wait histogram
counts (as for a claim alone), not its turn's one wait.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from service import metrics
from service.models import SINGLE_USE
from service.store import ClaimResult, Via
from service.store.sql import claimed, new_redemption_id, revoked_sql
from service.tokens import LinkClaims

if TYPE_CHECKING:
    from service.store.postgres import Positional, PostgresStore

# Claims in one statement at most; more stay queued for the next turn.
MAX_BATCH = 64

# Whether the link of row ``claim`` is revoked (``sql.REVOKED``, per row).
REVOKED_ROW = revoked_sql("claim.", "OFFSET 0")

# The single-use claim (``postgres.SINGLE_USE_CLAIM_SQL``) for many links at once: one
# row per link, in the order given. A link's ``use`` is NULL when it was not claimed,
# and then ``revoked`` says why (probed only for those rows).
#
# Its plan is made once per connection, for any number of links (the plan cache's
# generic plan), and must stay one that probes each link's rows by their keys, as the
# claim alone does, whatever the tables' sizes were when it was made:
# - the arrays come through a subquery the planner may not flatten (``OFFSET 0``), so it
#   never sees how many links a batch holds: planned for their count, each run would
#   be planned again (which cost more than claiming four links);
# - every probe is a correlated subquery that may not become a join (``OFFSET 0`` again),
#   since a join may be planned as a scan of the whole table (the revocations, the
#   counters), hashed, which is cheaper only while the table is nearly empty.
BATCH_CLAIM_SQL = f"""
WITH arrays AS (
    SELECT CAST(:client_ids AS text[]) AS client_ids, CAST(:link_ids AS text[]) AS link_ids,
           CAST(:claim_keys AS text[]) AS claim_keys, CAST(:actions AS text[]) AS actions,
           CAST(:subjects AS text[]) AS subjects, CAST(:data AS text[]) AS data,
           CAST(:vias AS text[]) AS vias, CAST(:expires_at AS timestamptz[]) AS expires_at,
           CAST(:issued_at AS timestamptz[]) AS issued_at,
           CAST(:redemption_ids AS text[]) AS ids, CAST(:nows AS timestamptz[]) AS nows
    OFFSET 0
),
input AS (
    SELECT claim.* FROM arrays, unnest(
        arrays.client_ids, arrays.link_ids, arrays.claim_keys, arrays.actions, arrays.subjects,
        arrays.data, arrays.vias, arrays.expires_at, arrays.issued_at, arrays.ids, arrays.nows
    ) WITH ORDINALITY AS claim (client_id, link_id, claim_key, action, subject, data, via,
                                expires_at, issued_at, id, now, n)
),
audit AS (
    INSERT INTO redemptions
        (id, client_id, link_id, claim_key, action, subject, data, use, max_uses, redeemed_at,
         once_key, via, claim_expires_at)
    SELECT claim.id, claim.client_id, claim.link_id, claim.claim_key, claim.action,
           claim.subject, CAST(claim.data AS json), COALESCE(counter.issued, 0) + 1, 1,
           claim.now, NULL, claim.via, claim.expires_at
    FROM input AS claim
    LEFT JOIN LATERAL (SELECT uses, issued FROM claims
                       WHERE client_id = claim.client_id AND key = claim.claim_key
                       OFFSET 0) AS counter ON TRUE
    WHERE NOT EXISTS (SELECT 1 FROM redemptions
                      WHERE client_id = claim.client_id AND claim_key = claim.claim_key
                        AND {SINGLE_USE}
                      OFFSET 0)
      AND COALESCE(counter.uses, 0) < 1
      AND NOT ({REVOKED_ROW})
    ORDER BY claim.client_id, claim.claim_key
    RETURNING id, use
)
SELECT audit.use AS use,
       CASE WHEN audit.use IS NULL THEN {REVOKED_ROW} END AS revoked
FROM input AS claim
LEFT JOIN audit ON audit.id = claim.id
ORDER BY claim.n
"""


def batch_params(
    claims: list[tuple[LinkClaims, datetime, Via]], redemption_ids: list[str]
) -> dict[str, object]:
    """``BATCH_CLAIM_SQL``'s arrays for (link, now, door) claims, one element each."""
    links = [link for link, _, _ in claims]
    return {
        "client_ids": [link.client_id for link in links],
        "link_ids": [link.link_id for link in links],
        "claim_keys": [link.claim_key for link in links],
        "actions": [link.action for link in links],
        "subjects": [link.subject for link in links],
        "data": [json.dumps(link.data) for link in links],  # the json codec takes text
        "vias": [via.value for _, _, via in claims],
        "expires_at": [link.expires_at_datetime for link in links],
        "issued_at": [link.issued_at for link in links],
        "redemption_ids": redemption_ids,
        "nows": [now for _, now, _ in claims],
    }


@dataclass(slots=True)
class _Queued:
    """One claim waiting for a turn; its request awaits ``answer``."""

    link: LinkClaims
    now: datetime
    via: Via
    answer: asyncio.Future[ClaimResult]
    asked_at: float  # time.perf_counter() when it was queued: its wait for a connection


def _each_claim_times_its_wait(seconds: float) -> None:
    """The turn's own wait, not reported: its claims report theirs (``ClaimBatches._turn``)."""


def _waited(batch: list[_Queued]) -> None:
    """Each claim's wait, from when it was queued until now (its turn's connection came,
    or no connection came in time)."""
    now = time.perf_counter()
    for queued in batch:
        metrics.pool_waited(now - queued.asked_at)


class ClaimBatches:
    """The queue of single-use first uses that found the line full, and the turns that
    claim them together (``PostgresStore.claim`` decides which claims come here)."""

    def __init__(
        self, store: PostgresStore, line: asyncio.Semaphore, statement: Positional
    ) -> None:
        self._store = store
        self._line = line  # the store's fair line (postgres._Turn)
        self._statement = statement  # BATCH_CLAIM_SQL
        self._queue: list[_Queued] = []
        self._turn_waiting = False
        self._turns: set[asyncio.Task[None]] = set()
        self.batches = 0  # statements so far that claimed more than one link

    def wanted(self) -> bool:
        """Whether a claim would wait in line now (every place taken)."""
        return self._line.locked()

    async def claim(self, link: LinkClaims, now: datetime, via: Via) -> ClaimResult:
        answer = asyncio.get_running_loop().create_future()
        queued = _Queued(link, now, via, answer, time.perf_counter())
        self._queue.append(queued)
        if not self._turn_waiting:
            self._line_up()
        return await queued.answer

    def _line_up(self) -> None:
        """A turn that waits in line for the queue: a task of its own, so that cancelling
        the request that started it cancels no other request's claim."""
        self._turn_waiting = True
        turn = asyncio.get_running_loop().create_task(self._turn())
        self._turns.add(turn)
        turn.add_done_callback(self._turns.discard)

    async def drain(self) -> None:
        """Wait for the turns under way (the store is closing)."""
        if self._turns:
            await asyncio.gather(*self._turns, return_exceptions=True)

    def _take(self) -> list[_Queued]:
        batch = [q for q in self._queue[:MAX_BATCH] if not q.answer.done()]
        del self._queue[:MAX_BATCH]
        return batch

    async def _turn(self) -> None:
        batch: list[_Queued] = []
        in_line = True
        try:
            # The pool-wait histogram counts each claim's wait, from when it was queued,
            # rather than the turn's one wait for all of them.
            async with self._store.driver(observe=_each_claim_times_its_wait) as driver:
                in_line = self._turn_waiting = False
                batch = self._take()
                _waited(batch)
                if self._queue:  # more than one statement's worth: the next turn lines up
                    self._line_up()
                if batch:
                    await self._claim_together(driver, batch)
        except BaseException as exc:
            if in_line:  # no connection came in time: every queued claim would wait the same
                self._turn_waiting = False
                batch, self._queue = self._queue, []
                _waited(batch)
            for queued in batch:
                if queued.answer.done():
                    continue
                if isinstance(exc, Exception):
                    queued.answer.set_exception(exc)
                else:  # the turn itself was cancelled (the loop is closing)
                    queued.answer.cancel()
            if not isinstance(exc, Exception):
                raise

    async def _claim_together(self, driver: asyncpg.Connection[Any], batch: list[_Queued]) -> None:
        if len(batch) == 1:
            only = batch[0]
            result = await self._store.claim_alone(driver, only.link, only.now, only.via)
            if not only.answer.done():  # else its request was cancelled meanwhile
                only.answer.set_result(result)
            return
        ids = [new_redemption_id() for _ in batch]
        params = batch_params([(q.link, q.now, q.via) for q in batch], ids)
        statement = self._statement
        try:
            rows = await driver.fetch(statement.sql, *statement.arguments(params))
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
            # A link of the batch was claimed meanwhile, or is in it twice: nothing was
            # inserted. Each claim alone then decides, on this connection. (Batches insert
            # in the order of their claim keys, so two of them waiting on each other's
            # links should not happen; if it does, PostgreSQL ends one, and that one
            # goes this way too.)
            for queued in batch:
                if queued.answer.done():
                    continue  # its request was cancelled: nothing of it is recorded yet
                result = await self._store.claim_alone(driver, queued.link, queued.now, queued.via)
                if not queued.answer.done():
                    queued.answer.set_result(result)
            return
        self.batches += 1
        for queued, redemption_id, row in zip(batch, ids, rows, strict=True):
            if queued.answer.done():
                continue  # its request was cancelled meanwhile; the use stands, recorded
            use = row["use"]
            if use is None:
                result = ClaimResult(revoked=bool(row["revoked"]), redemption=None)
            else:
                record = claimed(queued.link, redemption_id, queued.now, use, queued.via)
                result = ClaimResult(revoked=False, redemption=record)
            queued.answer.set_result(result)
