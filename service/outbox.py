"""The outbox as the delivery code sees it: leased jobs, the retry schedule, requeueing.

The statements live in the store (``service.store.sql``, "outbox"): the claim
writes a redemption's job with it, and ``Store.lease_due``, ``record_attempt``,
``release`` and ``requeue`` move it on. Here is what they mean: a job is
leased until a moment, its outcome is recorded only under that lease, and a
failed attempt is retried on the Standard Webhooks schedule, with jitter.

Every statement is its own short transaction; no HTTP happens inside one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from service.errors import Conflict, NotFound
from service.store import AttemptOutcome, Job, Requeued, Store
from service.webhooks import Attempt

JITTER = 0.1  # each retry delay is stretched or shrunk by up to 10 %


def retry_delay(
    attempts_made: int,
    schedule: Sequence[float],
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts; None when done.

    The first attempt is immediate; ``schedule[k]`` is the wait after attempt
    k + 1. A receiver's ``Retry-After`` is honoured as a lower bound.
    """
    if attempts_made > len(schedule):
        return None
    delay = schedule[attempts_made - 1] * (rng or random).uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def record(
    store: Store,
    job: Job,
    attempt: Attempt,
    now: datetime,
    schedule: Sequence[float],
) -> AttemptOutcome | None:
    """Write the outcome of one attempt, if we still hold the lease; what was written, or
    None when the lease was lost (another process owns the job now)."""
    retry_at = None
    if not attempt.delivered:
        delay = retry_delay(job.attempts + 1, schedule, attempt.retry_after)
        retry_at = None if delay is None else now + timedelta(seconds=delay)
    error = None if attempt.delivered else attempt.error
    outcome = AttemptOutcome(attempt.delivered, error, retry_at)
    return outcome if await store.record_attempt(job, now, outcome) else None


async def requeue(store: Store, client_id: str, redemption_id: str, now: datetime) -> None:
    """Queue a redemption's webhook again, from a fresh retry schedule, under the same id.

    Raises NotFound for an id this client has no redemption for, and Conflict
    when the redemption's action delivers no webhooks, or when it is a ``sync``
    redemption whose receiver has not decided yet (it is accepted or given back).
    """
    match await store.requeue(client_id, redemption_id, now):
        case Requeued.NO_WEBHOOK:
            raise Conflict(f"redemption '{redemption_id}' belongs to an action without webhooks")
        case Requeued.DECIDING:
            raise Conflict(f"redemption '{redemption_id}' awaits its receiver's verdict")
        case Requeued.UNKNOWN:
            raise NotFound(f"no redemption '{redemption_id}'")
