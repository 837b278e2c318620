"""Settling a ``sync`` redemption: its receiver's verdict, made to stick through database blips.

A ``sync`` redemption is claimed with its webhook job ``deciding`` and leased
to its request (``Store.claim(sync=True)``); the request calls the receiver,
then settles the redemption in the database:

- accepted (2xx): ``Store.accept`` marks the job delivered, the person succeeds;
- anything else: ``Store.give_back`` deletes the redemption and returns its
  use, the person is sent to failure (``rejected`` or ``unavailable``).

Either is retried with backoff while the database is unavailable (each try
bounded by the time left, so a stalled connection cannot hold the person
longer): a give-back for ``SETTLE_SECONDS``, an acceptance until shortly
before the job's lease ends. What is not settled by then is settled by the
rule every process applies (``sweep``, run by each dispatcher): a job still
``deciding`` after its lease is given back. No process ever sends a
``deciding`` job, so a refused redemption is never delivered again, and a
process that dies mid-call leaves nothing half-done: its redemption is given
back once the lease expires.

So each answer the person gets is true:

- refused, give-back not done in time: the receiver's verdict
  (``rejected``/``unavailable``); the use comes back when the database does,
  within a lease (``Deliverer.lease_until``) of the claim;
- accepted, acceptance not recorded in time: the 503 page (``DatabaseUnavailable``):
  the acceptance may have been recorded by a try whose answer was lost, or the
  redemption will be given back (although its receiver acted on it, as when
  it answers too late); trying again tells which.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from service.errors import DatabaseUnavailable
from service.store import Job, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

SETTLE_SECONDS = 3.0
"""How long a request retries settling its redemption before leaving it to the rule."""
LEASE_MARGIN = 0.5  # seconds before the lease ends that a request stops trying to accept
FIRST_PAUSE, LONGEST_PAUSE = 0.05, 0.5
SWEEP_BATCH = 100


async def _retrying(operation: Callable[[], Awaitable[T]], seconds: float) -> T:
    """``operation()`` until it answers, while the database is unavailable, for
    ``seconds`` at most; then the last ``DatabaseUnavailable``."""
    deadline = time.monotonic() + seconds
    pause = FIRST_PAUSE
    while True:
        left = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(left, 0.0)):
                return await operation()
        except TimeoutError:
            raise DatabaseUnavailable(f"no answer within {seconds:g} s") from None
        except DatabaseUnavailable:
            if deadline - time.monotonic() <= pause:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


async def accept(store: Store, job: Job) -> bool:
    """Record the receiver's acceptance. True: the redemption stands; False: it was
    given back meanwhile (its lease had expired). ``DatabaseUnavailable``: unknown.

    Tried for as long as the lease lasts, ``SETTLE_SECONDS`` at least: a receiver
    that has acted is worth the wait, since an acceptance not recorded is given back.
    """
    now = datetime.now(UTC)
    seconds = max(SETTLE_SECONDS, (job.lease - now).total_seconds() - LEASE_MARGIN)
    return await _retrying(lambda: store.accept(job, now), seconds)


async def give_back(store: Store, job: Job) -> None:
    """Give the refused redemption's use back, or leave it to the rule if the database
    stays away (it is given back once its lease has expired; nothing can accept it)."""
    redemption_id = job.redemption.redemption_id
    try:
        await _retrying(lambda: store.give_back(redemption_id), SETTLE_SECONDS)
    except DatabaseUnavailable:
        log.warning(
            "use of %s not given back yet: database unavailable; it will be after its lease",
            redemption_id,
        )


async def sweep(store: Store, now: datetime) -> int:
    """Give back every ``deciding`` redemption whose lease expired before ``now``."""
    total = 0
    while given := await store.give_back_abandoned(now, SWEEP_BATCH):
        total += given
        if given < SWEEP_BATCH:
            break
    if total:
        log.info("gave back %d sync redemption(s) nobody settled in time", total)
    return total
