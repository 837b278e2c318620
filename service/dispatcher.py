"""The dispatcher: retries webhooks from the outbox until they are delivered or failed.

It runs inside every service process (started and stopped by the app's
lifespan) and as ``action-links dispatcher`` for operators who want it
separate (``service.standalone``). Any number of them share the work: each round leases a batch of
due jobs (``Store.lease_due``), attempts them concurrently outside any
transaction, and records each outcome in its own short transaction while it
still holds the lease. A process that dies mid-delivery loses nothing: its
leases expire and another dispatcher takes the jobs.

``sync`` jobs are never sent from here: each round first gives back the sync
redemptions whose request did not settle them within their lease
(``service.settle``).

On shutdown it stops leasing, gives in-flight attempts a moment to finish,
and hands back the leases it still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime

from service import settle
from service.delivery import Deliverer
from service.errors import DatabaseUnavailable
from service.store import Job, Store

log = logging.getLogger(__name__)

BATCH_SIZE = 20
POLL_INTERVAL = 1.0  # seconds between looks at an empty outbox (WEBHOOK_POLL_INTERVAL)
STOP_GRACE = 2.0  # seconds in-flight attempts get to finish on shutdown (WEBHOOK_STOP_GRACE)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        deliverer: Deliverer,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = POLL_INTERVAL,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.store = store
        self.deliverer = deliverer
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.stop_grace = stop_grace
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._held: dict[str, datetime] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def wake(self) -> None:
        """Look at the outbox now (a job was queued in this process)."""
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            _, pending = await asyncio.wait({self._task}, timeout=self.stop_grace)
            if pending:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        held, self._held = self._held, {}
        try:
            await self.store.release(held)
        except Exception:
            log.warning("could not release %d delivery leases; they will expire", len(held))

    async def run_once(self) -> int:
        """Give back the sync redemptions nobody settled, then lease one batch of due
        jobs and deliver it; how many jobs there were."""
        now = datetime.now(UTC)
        # One read first: over an idle outbox (most rounds) it is the whole round.
        work = await self.store.outbox_work(now)
        if work.abandoned:
            await settle.sweep(self.store, now)
        if not work.due:
            return 0
        jobs = await self.store.lease_due(now, self.deliverer.lease_until(now), self.batch_size)
        self._held.update({job.redemption.redemption_id: job.lease for job in jobs})
        await asyncio.gather(*(self._deliver(job) for job in jobs))
        return len(jobs)

    async def _deliver(self, job: Job) -> None:
        redemption_id = job.redemption.redemption_id
        try:
            await self.deliverer.deliver(job)
        except DatabaseUnavailable:
            log.warning("delivery of %s failed: database unavailable", redemption_id)
        except Exception:
            log.exception("delivery of %s failed", redemption_id)
        self._held.pop(redemption_id, None)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                leased = await self.run_once()
            except DatabaseUnavailable as exc:
                leased = 0
                log.warning("dispatcher: database unavailable (%s)", exc.cause_name)
            except Exception:
                leased = 0
                log.exception("dispatcher round failed")
            if leased < self.batch_size:
                await self._idle()

    async def _idle(self) -> None:
        """Sleep until woken or until the next poll (jittered, so processes spread out)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_interval * random.uniform(0.5, 1.0)):
                await self._wake.wait()
        self._wake.clear()
