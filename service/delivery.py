"""Delivering one job: find the receiver, make one attempt, record how it went.

Used by the redemption (the inline attempt of ``async`` actions, the call of
``sync`` ones) and by the dispatcher (retries). The receiver's URL and secret
come from the registry, so a rotated secret signs the next attempt.

The process also remembers, per client, receivers that were unavailable in
the last few seconds (``KnownDown``): redemptions of ``async`` actions skip
their inline attempt then and leave the job to the dispatcher, so people are
not kept waiting on a receiver that is down. This memory is an optimisation
only; nothing correctness-relevant lives in it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from service import metrics, outbox, webhooks
from service.errors import DatabaseUnavailable
from service.registry import Registry
from service.store import Job, RedemptionRecord, Store
from service.tracing import NO_TRACING, Tracing
from service.webhooks import Attempt, Verdict

log = logging.getLogger(__name__)

KNOWN_DOWN_SECONDS = 5.0
# How long a lease outlives the attempt's own time limit (WEBHOOK_LEASE_GRACE): the
# outcome is recorded within it, and a little clock skew between machines is tolerated.
LEASE_GRACE_SECONDS = 5.0


class KnownDown:
    """Clients whose receiver this process saw unavailable less than ``seconds`` ago."""

    def __init__(self, seconds: float = KNOWN_DOWN_SECONDS) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}

    def __contains__(self, client_id: str) -> bool:
        until = self._until.get(client_id)
        return until is not None and time.monotonic() < until

    def note(self, client_id: str, attempt: Attempt) -> None:
        """A refusal or a delivery shows the receiver is up; anything else, down."""
        if attempt.verdict is Verdict.UNAVAILABLE:
            self._until[client_id] = time.monotonic() + self.seconds
        else:
            self._until.pop(client_id, None)


class Deliverer:
    def __init__(
        self,
        http: webhooks.WebhookClient,
        registry: Registry,
        store: Store,
        timeout: float,
        schedule: Sequence[float],
        tracing: Tracing = NO_TRACING,
        lease_grace: float = LEASE_GRACE_SECONDS,
    ) -> None:
        self.http = http
        self.registry = registry
        self.store = store
        self.timeout = timeout
        self.schedule = tuple(schedule)
        self.tracing = tracing
        self.lease_grace = lease_grace
        self.known_down = KnownDown()

    def lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.timeout + self.lease_grace)

    def attempts_inline(self, delivery: str, client_id: str) -> bool:
        """Whether a redemption calls the receiver before answering the person."""
        if delivery == "sync":
            return True
        return delivery == "async" and client_id not in self.known_down

    async def attempt(self, redemption: RedemptionRecord) -> Attempt:
        """One attempt, to the receiver the client has configured now (timed and traced
        when a request is made)."""
        client = await self.registry.client(redemption.client_id)
        seconds = None
        if client is None:
            result = Attempt(Verdict.UNAVAILABLE, "the client no longer exists")
        elif not client.webhook_url:
            result = Attempt(Verdict.UNAVAILABLE, "the client has no webhook_url")
        else:
            span_attributes = {
                "action_links.client": redemption.client_id,
                "action_links.redemption_id": redemption.redemption_id,
                "action_links.webhook_id": webhooks.message_id(redemption),
            }
            with self.tracing.webhook_attempt(client.webhook_url, span_attributes) as span:
                started = time.perf_counter()
                result = await self.http.attempt(
                    client.webhook_url,
                    client.webhook_secret,
                    redemption,
                    self.timeout,
                    span.headers,
                )
                seconds = time.perf_counter() - started
                span.finished(result.kind, result.status)
        self.known_down.note(redemption.client_id, result)
        metrics.webhook_attempt(result.kind, seconds)
        if not result.delivered:
            log.info("webhook for %s not delivered: %s", redemption.redemption_id, result.error)
        return result

    async def record(self, job: Job, attempt: Attempt) -> None:
        """Record the outcome; on failure the lease simply expires and the job is retried."""
        redemption_id = job.redemption.redemption_id
        try:
            recorded = await outbox.record(
                self.store, job, attempt, datetime.now(UTC), self.schedule
            )
        except DatabaseUnavailable:
            log.warning("outcome of %s not recorded: database unavailable", redemption_id)
            return
        if recorded is None:
            log.info("outcome of %s not recorded: lease lost", redemption_id)
        elif recorded.failed:
            metrics.delivery_failed()
            log.warning("webhook for %s failed: no attempt left", redemption_id)

    async def deliver(self, job: Job) -> Attempt:
        """Attempt and record: the whole life of one leased job."""
        result = await self.attempt(job.redemption)
        await self.record(job, result)
        return result
