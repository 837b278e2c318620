"""The storage seam: what the use cases need from a database, and the records it returns.

One implementation per database (``postgres.PostgresStore``,
``sqlite.SqliteStore``), chosen once by ``open_store`` when a process builds
its state. Each owns its engine, its statements and its connection handling,
and turns its driver's "the database is gone" errors into the project's own
``errors.DatabaseUnavailable`` at that boundary, so no use case or router asks
which driver failed. Every other database error is a bug and surfaces as is.

Configuration (clients, keys, actions) is read and written through SQLAlchemy
sessions on ``Store.engine`` (``service.registry``, ``service.admin``); the
same boundary covers them.

A new operation is one method here, one in each implementation (or one in
``sql.SqlStore`` when both dialects write it alike) and one contract test in
``tests/test_store.py``, which runs on both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from service.tokens import LinkClaims

# --- records ---------------------------------------------------------------------------


class Via(StrEnum):
    """The door a redemption came through (DESIGN.md, idea 6: one use case, many doors)."""

    LINK = "link"  # following the link, or posting its confirmation page
    CODE = "code"  # a typed code (``service.typed_code``)
    ONE_CLICK = "one_click"  # a mail provider's RFC 8058 one-click POST


@dataclass(frozen=True, slots=True)
class RedemptionRecord:
    """One accepted use of a link: the audit row, and what its webhook reports.

    ``exchanged_at``: when the caller's backend exchanged the success
    redirect's code for it (``Store.exchange``); None until then.
    """

    redemption_id: str
    client_id: str
    link_id: str
    claim_key: str
    action: str
    subject: str | None
    data: Any
    use: int
    max_uses: int | None
    redeemed_at: datetime
    once_key: str | None = None
    via: Via = Via.LINK
    exchanged_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What a claim did: the redemption it recorded, or why none (revoked, or no use left)."""

    revoked: bool
    redemption: RedemptionRecord | None

    @property
    def claimed(self) -> bool:
        return self.redemption is not None


@dataclass(frozen=True, slots=True)
class LinkState:
    """A link's counter and revocation as they stand, read without claiming anything.

    ``uses`` is the counter the link draws on (0 before its first use).
    ``recorded_uses`` is what to tell a client: the counter while it exists,
    else (when asked for) the link's audit rows, which outlive a purged counter.
    ``budget`` is the counter's size, fixed by its first use (None: unlimited,
    or no counter yet); a once key's later links draw on it too.
    """

    uses: int
    revoked: bool
    recorded_uses: int
    budget: int | None = None

    def exhausted(self, max_uses: int | None) -> bool:
        """Whether a link allowing ``max_uses`` has no use left on this counter."""
        return any(limit is not None and self.uses >= limit for limit in (max_uses, self.budget))


@dataclass(frozen=True, slots=True)
class Usage:
    """What the database knows about one link's uses."""

    uses: int
    first_at: datetime | None
    last_at: datetime | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class Filters:
    """Which of a client's redemptions the audit log lists."""

    link_id: str | None = None
    subject: str | None = None
    action: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """A redemption's webhook job as the audit log shows it (``status`` None: no job)."""

    status: str | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the audit log: the redemption, its place (``seq``) and its delivery."""

    seq: int
    redemption: RedemptionRecord
    delivery: DeliveryState


@dataclass(frozen=True, slots=True)
class Exchange:
    """What an exchange did: whether this call set ``exchanged_at`` (``won``), and the
    redemption as it stood right after (None: the client has no such redemption)."""

    won: bool
    entry: AuditEntry | None


@dataclass(frozen=True, slots=True)
class Job:
    """A leased delivery job: the redemption to report, the attempts made so far, and the
    lease, which is also the holder's token: an outcome is recorded only under it."""

    redemption: RedemptionRecord
    attempts: int
    lease: datetime


@dataclass(frozen=True, slots=True)
class OutboxWork:
    """What a dispatcher's round would find: jobs due, sync redemptions left unsettled."""

    due: bool
    abandoned: bool


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What to write after one attempt: delivered, due again at ``retry_at``, or failed."""

    delivered: bool
    error: str | None
    retry_at: datetime | None

    @property
    def failed(self) -> bool:
        """The last attempt the schedule allows failed: the delivery ends ``failed``."""
        return not self.delivered and self.retry_at is None


class Requeued(StrEnum):
    REQUEUED = "requeued"
    NO_WEBHOOK = "no_webhook"  # the redemption exists, its action delivers no webhooks
    DECIDING = "deciding"  # a sync redemption whose receiver's verdict is awaited
    UNKNOWN = "unknown"  # no such redemption of this client


@dataclass(frozen=True, slots=True)
class FailureCount:
    """A client address's failures in its current window, and when that window ends."""

    failures: int
    window_ends: datetime


@dataclass(frozen=True, slots=True)
class PurgeTarget:
    """One kind of row purge deletes: ``table`` rows whose ``column`` is before a cutoff.

    ``walked_by``: ``column`` has no index; purge walks the table in the order of
    this one (its primary key, which grows with ``column``) instead of finding the
    rows through ``column`` (``purge_batches.Walk``: what that guarantees).
    ``carries_claims``: some rows are a link's claim (a single-use link's audit row
    on PostgreSQL, migration 0006); before they go, their links get counters, so
    that purging the audit log never makes a used link usable again."""

    table: str
    column: str
    carries_claims: bool = False
    walked_by: str | None = None

    def __post_init__(self) -> None:
        if self.carries_claims and self.walked_by is None:
            # The claims' counters are written for the walk's ranges (``purge_batches``):
            # found through an index, such rows would go without them.
            raise ValueError(f"{self.table}: a target that carries claims is walked")

    def finished(self, deleted: int, limit: int) -> bool:
        """Whether a batch that deleted ``deleted`` rows of at most ``limit`` was its run's
        last: one short of the limit, or for a walked target one that deleted none (a
        batch of the walk may keep newer rows, and hold older ones behind them)."""
        return deleted == 0 if self.walked_by is not None else deleted < limit

    @property
    def condition(self) -> str:
        """The SQL condition of a row to delete, with the parameter ``:cutoff``."""
        return f"{self.column} < :cutoff"


CLAIMS = PurgeTarget("claims", "expires_at")
REVOCATIONS = PurgeTarget("revocations", "expires_at")
SUBJECT_REVOCATIONS = PurgeTarget("subject_revocations", "expires_at")
# The audit log has no index on ``redeemed_at`` (0008: one entry fewer per first use).
REDEMPTIONS = PurgeTarget("redemptions", "redeemed_at", carries_claims=True, walked_by="seq")
CODE_FAILURES = PurgeTarget("code_failures", "expires_at")
FAILURE_COUNTERS = PurgeTarget("failure_counters", "expires_at")


# --- the protocol ------------------------------------------------------------------------


class PurgeBatches(Protocol):
    """The purge's connection, while it holds the purge lock."""

    async def delete_batch(self, target: PurgeTarget, cutoff: datetime, limit: int) -> int:
        """Delete (and commit) up to ``limit`` rows of ``target`` before ``cutoff``; the
        run goes on until ``target.finished`` says so."""
        ...


class Store(Protocol):
    @property
    def engine(self) -> AsyncEngine:
        """For SQLAlchemy sessions (configuration) and the schema check; same error boundary."""
        ...

    async def close(self) -> None: ...

    def kept_connections(self) -> int:
        """Connections checked out of the pool yet idle: kept for the next redemptions
        (PostgreSQL's line; ``postgres.py``). The pool's ``in use`` gauge leaves them out."""
        ...

    def watch(self, on_change: Callable[[str | None], None]) -> None:
        """Until ``close``, call ``on_change(client_id)`` when any process changes that
        client's configuration, and ``on_change(None)`` when changes may have been
        missed (PostgreSQL: ``LISTEN``, ``service.store.changes``). SQLite tells
        nothing: there, the cache lifetime alone bounds how long a change takes."""
        ...

    # redemption

    async def claim(
        self,
        link: LinkClaims,
        now: datetime,
        *,
        deliver: bool,
        lease: datetime | None,
        via: Via = Via.LINK,
        sync: bool = False,
    ) -> ClaimResult:
        """Take one use of ``link`` and record it (with its delivery job when ``deliver``,
        leased until ``lease``; ``via`` the door; ``sync``: the job is ``deciding``, its
        receiver's verdict awaited), committed before returning; or say why not. The use
        number is new: a counter never hands one out twice, not even after a give-back."""
        ...

    # a sync redemption's verdict

    async def accept(self, job: Job, now: datetime) -> bool:
        """The receiver accepted ``job``'s deciding redemption: record it as delivered,
        if its lease still holds. Whether the redemption stands accepted (False: it was
        given back, because the lease had expired)."""
        ...

    async def give_back(self, redemption_id: str) -> bool:
        """Undo the claim of a deciding redemption: delete its audit row (and job),
        return the use, in one transaction. False if it is gone or was accepted."""
        ...

    async def give_back_abandoned(self, now: datetime, limit: int) -> int:
        """Give back up to ``limit`` deciding redemptions whose lease expired before
        ``now`` (nobody will settle them: their request's process died, or the
        database was away too long); how many."""
        ...

    async def peek(self, link: LinkClaims, *, recorded: bool = False) -> LinkState:
        """The link's counter and revocation, read only; ``recorded``: audit rows too."""
        ...

    # finishing the flow in the caller's app

    async def exchange(
        self, client_id: str, redemption_id: str, now: datetime, since: datetime
    ) -> Exchange:
        """Set the redemption's ``exchanged_at`` to ``now``, in one atomic statement, if it
        is the client's, not exchanged yet and redeemed after ``since``; then read it
        back (on the same connection: one wait for the pool)."""
        ...

    async def code_failures(self, client_id: str, link_id: str) -> int:
        """How many wrong typed codes were entered for the link (0 when none)."""
        ...

    async def add_code_failure(
        self, client_id: str, link_id: str, expires_at: datetime, limit: int
    ) -> int | None:
        """Count one more wrong typed code for the link, atomically, unless ``limit`` are
        counted already; the new count, or None when the limit was reached before.
        The row lives until ``expires_at`` (the link's expiry; then ``purge``)."""
        ...

    # lifecycle

    async def revoke_link(
        self, client_id: str, link_id: str, revoked_at: datetime, expires_at: datetime
    ) -> None:
        """Record a link's revocation; an existing one stands."""
        ...

    async def revoke_subject(
        self,
        client_id: str,
        subject: str,
        action: str,
        revoked_at: datetime,
        expires_at: datetime,
    ) -> datetime:
        """Record a subject revocation, moved forward only; the ``revoked_at`` now stored."""
        ...

    async def usage(self, client_id: str, link_id: str, claim_key: str) -> Usage: ...

    # audit log

    async def redemptions(
        self, client_id: str, filters: Filters, before_seq: int | None, limit: int
    ) -> list[AuditEntry]:
        """Up to ``limit`` of the client's redemptions below ``before_seq``, newest first."""
        ...

    async def redemption(self, client_id: str, redemption_id: str) -> AuditEntry | None: ...

    # outbox

    async def outbox_work(self, now: datetime) -> OutboxWork:
        """Whether ``lease_due`` and ``give_back_abandoned`` would find anything at ``now``:
        one read, so that a dispatcher's round over an idle outbox costs one statement
        instead of two write transactions."""
        ...

    async def lease_due(self, now: datetime, lease: datetime, limit: int) -> list[Job]:
        """Lease up to ``limit`` due jobs nobody alive holds, until ``lease``."""
        ...

    async def record_attempt(self, job: Job, now: datetime, outcome: AttemptOutcome) -> bool:
        """Write an attempt's outcome if the job is still held under its lease."""
        ...

    async def release(self, leases: Mapping[str, datetime]) -> None:
        """Hand back leased jobs (redemption id → lease), those still held under it."""
        ...

    async def requeue(self, client_id: str, redemption_id: str, now: datetime) -> Requeued:
        """Queue a job again from a fresh schedule; an attempt in flight keeps its lease."""
        ...

    async def delivery_backlog(
        self,
        timeout: float,  # noqa: ASYNC109 - the server is told the limit too
    ) -> tuple[int, datetime | None]:
        """(pending jobs, creation time of the oldest), read within ``timeout`` seconds."""
        ...

    # abuse limits

    async def count_failure(
        self, scope: str, address: str, now: datetime, window: timedelta
    ) -> FailureCount:
        """Count one failed attempt of ``scope`` from ``address`` in one atomic upsert,
        committed before returning: the window's new total. A window that has ended
        by ``now`` starts over (at 1, ending at ``now + window``)."""
        ...

    # purge

    def purging(self) -> AbstractAsyncContextManager[PurgeBatches | None]:
        """The purge's connection, or None when another process is purging."""
        ...
