"""The outbox: every statement on the ``deliveries`` table.

A job is *leased* by writing ``leased_until``: until then nobody else
attempts it. The lease value doubles as the holder's token: the outcome of an
attempt is recorded only ``WHERE leased_until = <my lease>``, so a process
that stalled past its lease (and lost the job to another) records nothing.
A process that dies simply lets its leases expire.

Leasing due jobs is one statement: on PostgreSQL an ``UPDATE … WHERE
redemption_id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)``, so concurrent
dispatchers take disjoint batches without waiting on each other. SQLite has
no row locks (and drops the ``FOR UPDATE``); there the same ``UPDATE`` runs
under the database's single write lock, which makes it just as exclusive.

Every statement is its own short transaction; no HTTP happens inside one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from service.errors import Conflict, NotFound
from service.models import Delivery
from service.models import Redemption as RedemptionRow
from service.webhooks import Attempt, RedemptionEvent

JITTER = 0.1  # each retry delay is stretched or shrunk by up to 10 %

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class Job:
    """A leased delivery: the event to send, the attempts made so far, and our lease."""

    event: RedemptionEvent
    attempts: int
    lease: datetime


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


def _event(row: Any) -> RedemptionEvent:
    return RedemptionEvent(
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
    )


async def lease_due(engine: AsyncEngine, now: datetime, lease: datetime, limit: int) -> list[Job]:
    """Lease up to ``limit`` jobs that are due and not leased by anyone alive."""
    due = (
        select(Delivery.redemption_id)
        .where(
            Delivery.status == PENDING,
            Delivery.next_attempt_at <= now,
            or_(Delivery.leased_until.is_(None), Delivery.leased_until < now),
        )
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
    redemptions = RedemptionRow.__table__
    async with engine.begin() as conn:
        attempts = {row.redemption_id: row.attempts for row in await conn.execute(take)}
        if not attempts:
            return []
        rows = await conn.execute(select(redemptions).where(redemptions.c.id.in_(attempts)))
        return [Job(_event(row), attempts[row.id], lease) for row in rows]


async def record(
    engine: AsyncEngine,
    job: Job,
    attempt: Attempt,
    now: datetime,
    schedule: Sequence[float],
) -> bool:
    """Write the outcome of one attempt, if we still hold the lease. False if we lost it."""
    values: dict[str, Any] = {"attempts": Delivery.attempts + 1, "leased_until": None}
    if attempt.delivered:
        values.update(status=DELIVERED, delivered_at=now, last_error=None)
    else:
        delay = retry_delay(job.attempts + 1, schedule, attempt.retry_after)
        values["last_error"] = attempt.error
        if delay is None:
            values["status"] = FAILED
        else:
            values["next_attempt_at"] = now + timedelta(seconds=delay)
    statement = (
        update(Delivery)
        .where(
            Delivery.redemption_id == job.event.redemption_id,
            Delivery.status == PENDING,
            Delivery.leased_until == job.lease,
        )
        .values(**values)
    )
    # One statement, atomic by itself: autocommit spares the BEGIN and COMMIT
    # round trips on every inline delivery of a redemption.
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        result = await conn.execute(statement)
    return bool(result.rowcount == 1)


async def release(engine: AsyncEngine, leases: Mapping[str, datetime]) -> None:
    """Hand leased jobs back (on shutdown) so another process need not wait for expiry."""
    if not leases:
        return
    async with engine.begin() as conn:
        for redemption_id, lease in leases.items():
            await conn.execute(
                update(Delivery)
                .where(Delivery.redemption_id == redemption_id, Delivery.leased_until == lease)
                .values(leased_until=None)
            )


async def requeue(engine: AsyncEngine, client_id: str, redemption_id: str, now: datetime) -> None:
    """Queue a redemption's webhook again, from a fresh retry schedule, under the same id.

    Raises NotFound for an id this client has no redemption for, and Conflict
    when the redemption's action delivers no webhooks.
    """
    # An attempt in flight keeps its lease: no other process may send the job
    # meanwhile (one process per job at a time), and its outcome is still recorded.
    in_flight = Delivery.leased_until > now
    statement = (
        update(Delivery)
        .where(Delivery.redemption_id == redemption_id, Delivery.client_id == client_id)
        .values(
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            leased_until=case((in_flight, Delivery.leased_until), else_=None),
            delivered_at=None,
        )
    )
    known = exists().where(RedemptionRow.id == redemption_id, RedemptionRow.client_id == client_id)
    async with engine.begin() as conn:
        if (await conn.execute(statement)).rowcount == 1:
            return
        if await conn.scalar(select(known)):
            raise Conflict(f"redemption '{redemption_id}' belongs to an action without webhooks")
    raise NotFound(f"no redemption '{redemption_id}'")
