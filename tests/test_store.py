"""The storage seam (``service.store``): one contract, run on PostgreSQL and on SQLite.

Every test here takes the ``store`` of the test's backend and checks what the
use cases rely on: claims never exceed their limits (also when many run at
once), once keys share one budget per client, revocations of a link and of a
subject refuse claims, a given-back use is claimed again, peeks read without
writing, purge deletes in bounded batches, the audit log and the outbox
read back the redemption the claim recorded, and failed attempts are counted
per address in windows that start over once they have ended. A new storage operation gets its
contract test here, and so runs on both databases.

Below them, the PostgreSQL store's own parts: its direct asyncpg line (a fair
wait in line, bounded; failed or cancelled statements drop their connection)
and its mapping of asyncpg's errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import bindparam, event, text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi as AsyncpgDBAPI
from sqlalchemy.exc import EmulatedDBAPIException, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from service import metrics
from service.config import Settings
from service.db import create_session_factory, open_store
from service.errors import DatabaseUnavailable
from service.models import ALL_ACTIONS, UTCDateTime
from service.purge import purge
from service.store import (
    CLAIMS,
    CODE_FAILURES,
    FAILURE_COUNTERS,
    REDEMPTIONS,
    REVOCATIONS,
    SUBJECT_REVOCATIONS,
    AttemptOutcome,
    Exchange,
    Filters,
    Job,
    OutboxWork,
    PurgeTarget,
    Requeued,
    Store,
    Via,
    postgres,
)
from service.store.postgres import Positional, PostgresStore, driver_unavailable
from service.store.purge_batches import walk_of
from service.store.sql import new_redemption_id, peek_params
from service.tokens import LinkClaims
from tests.support.database import POSTGRES, SQLITE, SQLITE_PREFIX, fetch
from tests.support.hooks import eventually
from tests.support.links import link_claims as link
from tests.support.links import random_link_id
from tests.support.processes import free_port

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

LATER = timedelta(hours=1)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = open_store(Settings(database_url=database_url))
    yield opened
    await opened.close()


def url_of(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def utc() -> datetime:
    return datetime.now(UTC)


def micros(moment: datetime) -> int:
    """``issued_at_us`` of a link minted at ``moment``."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


async def uses_of(store: Store, claims: LinkClaims, times: int) -> list[int | None]:
    """Claim ``times`` in a row; the use number of each, None when refused."""
    found = []
    for _ in range(times):
        result = await store.claim(claims, utc(), deliver=False, lease=None)
        found.append(result.redemption.use if result.redemption else None)
    return found


# --- the boundary --------------------------------------------------------------------


@pytest.fixture
async def unreachable(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """A store whose database cannot be reached: a closed port, or a directory that is
    not there."""
    if backend == SQLITE:
        url = f"{SQLITE_PREFIX}{tmp_path / 'missing' / 'links.db'}"
    else:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"
    opened = open_store(Settings(database_url=url))
    yield opened
    await opened.close()

    # aiosqlite ends a failed connection's thread by a future on this loop: let the
    # threads hand it back before the loop closes (else they raise in the void).
    async def threads_ended() -> bool:
        return not any("_connection_worker_thread" in t.name for t in threading.enumerate())

    await eventually(threads_ended, timeout=5, what="aiosqlite's threads to end")


async def test_an_unreachable_database_is_database_unavailable(unreachable: Store) -> None:
    """Whatever the driver raised, every operation (and a session) says the same."""
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: unreachable.claim(link(), utc(), deliver=False, lease=None),
        lambda: unreachable.peek(link()),
        lambda: unreachable.give_back("r1"),
        lambda: unreachable.revoke_link("shop", random_link_id(), utc(), utc()),
        lambda: unreachable.redemptions("shop", Filters(), None, 10),
        lambda: unreachable.lease_due(utc(), utc(), 10),
        lambda: unreachable.outbox_work(utc()),
        lambda: unreachable.delivery_backlog(5.0),
        lambda: one_session_query_of(unreachable, "SELECT 1"),
    ]
    for operation in operations:
        with pytest.raises(DatabaseUnavailable) as raised:
            await operation()
        assert raised.value.__cause__ is not None  # the driver's error, kept


async def test_other_database_errors_are_not_unavailability(store: Store) -> None:
    """A bug (here a duplicate primary key) surfaces as the driver's error, not a 503."""
    insert = (
        "INSERT INTO claims (client_id, key, uses, first_used_at, last_used_at)"
        " VALUES ('shop', 'l:x', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    with pytest.raises(IntegrityError):
        await one_session_query_of(store, insert, insert)


async def one_session_query_of(store: Store, *statements: str) -> None:
    async with create_session_factory(store.engine)() as session:
        for sql in statements:
            await session.execute(text(sql))


# --- claims ----------------------------------------------------------------------------


async def test_a_claim_records_the_redemption_it_reports(store: Store) -> None:
    claims = link()
    now = utc()
    result = await store.claim(claims, now, deliver=False, lease=None)
    assert (result.claimed, result.revoked) == (True, False)
    record = result.redemption
    assert record is not None
    assert (record.link_id, record.claim_key, record.use, record.max_uses) == (
        claims.link_id,
        claims.claim_key,
        1,
        1,
    )
    entry = await store.redemption("shop", record.redemption_id)
    assert entry is not None
    assert entry.redemption == record  # the same record, read back from the audit log
    assert entry.delivery.status is None  # no webhook job


async def test_claims_stop_at_their_limit(store: Store) -> None:
    assert await uses_of(store, link(), 3) == [1, None, None]
    assert await uses_of(store, link(max_uses=3), 5) == [1, 2, 3, None, None]
    assert await uses_of(store, link(max_uses=None), 4) == [1, 2, 3, 4]
    refused = await store.claim(link(max_uses=1), utc(), deliver=False, lease=None)
    assert refused.claimed


async def test_a_used_link_is_refused_as_used_not_revoked(store: Store) -> None:
    claims = link()
    await store.claim(claims, utc(), deliver=False, lease=None)
    again = await store.claim(claims, utc(), deliver=False, lease=None)
    assert (again.claimed, again.revoked) == (False, False)


async def test_once_keys_share_one_budget_per_client(store: Store) -> None:
    first, second = link(once_key="voucher:1", max_uses=2), link(once_key="voucher:1", max_uses=2)
    assert await uses_of(store, first, 1) == [1]
    assert await uses_of(store, second, 2) == [2, None]
    assert await uses_of(store, link("mall", once_key="voucher:1"), 1) == [1]
    # A later link of the same key that allows more uses draws on the same budget,
    # whose size the first use fixed: none is left.
    assert await uses_of(store, link(once_key="voucher:1", max_uses=3), 2) == [None, None]


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        # max_uses of the key's links, in the order each is followed twice → the uses
        # each one got
        ((1, 3, None), (1, 0, 0)),
        ((3, 1, None), (2, 0, 1)),
        ((None, 1, 3, None), (2, 0, 1, 2)),  # an unlimited budget: each link's own limit
        ((2, 5), (2, 0)),
    ],
    ids=["1 first", "3 first", "unlimited first", "2 then 5"],
)
async def test_a_once_keys_budget_is_sized_by_its_first_use(
    store: Store, sizes: tuple[int | None, ...], expected: tuple[int, ...]
) -> None:
    key = f"voucher:{sizes}"
    got = []
    for size in sizes:
        claims = link(once_key=key, max_uses=size)
        taken = await uses_of(store, claims, 2)
        got.append(sum(use is not None for use in taken))
        if None in taken:  # what a peek (inspect, the confirm page) says agrees
            assert (await store.peek(claims)).exhausted(claims.max_uses)
    assert tuple(got) == expected
    [counter] = await fetch(url_of(store), "SELECT uses, max_uses FROM claims")
    assert (counter["uses"], counter["max_uses"]) == (sum(expected), sizes[0])


async def test_concurrent_links_of_one_key_take_the_first_sized_budget(store: Store) -> None:
    first = link(once_key="voucher:race", max_uses=2)
    assert await uses_of(store, first, 1) == [1]
    others = [link(once_key="voucher:race", max_uses=size) for size in (1, 3, 5, None)]
    results = await asyncio.gather(
        *(store.claim(c, utc(), deliver=False, lease=None) for c in others * 5)
    )
    assert sum(r.claimed for r in results) == 1


async def test_concurrent_claims_take_exactly_the_allowed_uses(store: Store) -> None:
    for max_uses in (1, 5):
        claims = link(max_uses=max_uses)
        results = await asyncio.gather(
            *(store.claim(claims, utc(), deliver=False, lease=None) for _ in range(20))
        )
        uses = sorted(r.redemption.use for r in results if r.redemption is not None)
        assert uses == list(range(1, max_uses + 1))
    shared = [link(once_key="voucher:9", max_uses=3) for _ in range(4)]
    results = await asyncio.gather(
        *(store.claim(c, utc(), deliver=False, lease=None) for c in shared * 5)
    )
    assert sum(r.claimed for r in results) == 3


# --- revocations -----------------------------------------------------------------------


async def test_a_revoked_link_is_refused_and_the_first_revocation_stands(store: Store) -> None:
    claims, spared = link(), link()
    first = utc()
    await store.revoke_link("shop", claims.link_id, first, first + LATER)
    await store.revoke_link("shop", claims.link_id, first + LATER, first + 2 * LATER)
    result = await store.claim(claims, utc(), deliver=False, lease=None)
    assert (result.claimed, result.revoked) == (False, True)
    assert (await store.peek(claims)).revoked
    assert (await store.claim(spared, utc(), deliver=False, lease=None)).claimed
    rows = await fetch(url_of(store), "SELECT expires_at FROM revocations")
    assert len(rows) == 1
    assert not (
        await store.claim(link("mall", link_id=claims.link_id), utc(), deliver=False, lease=None)
    ).revoked


async def test_a_subject_revocation_refuses_links_issued_before_it(store: Store) -> None:
    revoked_at = utc()
    before = link(subject="7", issued_at_us=micros(revoked_at) - 1)
    other_action = link(subject="7", action="subscribe", issued_at_us=micros(revoked_at) - 1)
    stored = await store.revoke_subject("shop", "7", "activate", revoked_at, revoked_at + LATER)
    assert stored == revoked_at
    after = link(subject="7", issued_at_us=micros(revoked_at) + 1)
    assert (await store.claim(before, utc(), deliver=False, lease=None)).revoked
    assert (await store.claim(other_action, utc(), deliver=False, lease=None)).claimed
    assert (await store.claim(after, utc(), deliver=False, lease=None)).claimed
    # Every action, and only ever moved forward.
    everything = await store.revoke_subject(
        "shop", "8", ALL_ACTIONS, revoked_at, revoked_at + LATER
    )
    earlier = revoked_at - LATER
    assert await store.revoke_subject("shop", "8", ALL_ACTIONS, earlier, revoked_at) == everything
    assert (
        await store.claim(
            link(subject="8", action="x", issued_at_us=micros(revoked_at) - 1),
            utc(),
            deliver=False,
            lease=None,
        )
    ).revoked


# --- give back, peek, usage ------------------------------------------------------------


async def sync_claim(store: Store, claims: LinkClaims, lease: datetime) -> Job:
    """A sync redemption's claim: its job awaits the receiver's verdict until ``lease``."""
    result = await store.claim(claims, utc(), deliver=True, lease=lease, sync=True)
    assert result.redemption is not None
    return Job(result.redemption, 0, lease)


async def test_a_given_back_use_can_be_claimed_again_under_a_new_number(store: Store) -> None:
    claims = link()
    job = await sync_claim(store, claims, utc() + LATER)
    assert await store.give_back(job.redemption.redemption_id)
    assert not await store.give_back(job.redemption.redemption_id)
    assert await store.redemption("shop", job.redemption.redemption_id) is None
    assert (await store.peek(claims)).uses == 0
    assert await store.delivery_backlog(1.0) == (0, None)  # the job went with it
    assert await uses_of(store, claims, 2) == [2, None]


async def test_use_numbers_never_repeat_among_redemptions_of_a_counter(store: Store) -> None:
    """The race of issue 13: A takes use 1, B use 2, A is refused and gives its use
    back, C takes the use; B and C are both accepted and must not share a number."""
    claims = link(max_uses=5)
    a, b = [await sync_claim(store, claims, utc() + LATER) for _ in range(2)]
    assert await store.accept(b, utc())
    assert await store.give_back(a.redemption.redemption_id)
    c = await sync_claim(store, claims, utc() + LATER)
    assert await store.accept(c, utc())
    assert (b.redemption.use, c.redemption.use) == (2, 3)
    assert await uses_of(store, claims, 4) == [4, 5, 6, None]
    entries = await store.redemptions("shop", Filters(link_id=claims.link_id), None, 10)
    assert sorted(e.redemption.use for e in entries) == [2, 3, 4, 5, 6]
    [counter] = await fetch(url_of(store), "SELECT uses, issued FROM claims")
    assert (counter["uses"], counter["issued"]) == (5, 6)


async def test_only_an_undecided_sync_redemption_is_given_back(store: Store) -> None:
    accepted = await sync_claim(store, link(), utc() + LATER)
    assert await store.accept(accepted, utc())
    assert await store.accept(accepted, utc())  # asked again (an answer was lost): still so
    assert not await store.give_back(accepted.redemption.redemption_id)
    plain = await store.claim(link(), utc(), deliver=True, lease=None)  # an async job
    assert plain.redemption is not None
    assert not await store.give_back(plain.redemption.redemption_id)
    entry = await store.redemption("shop", accepted.redemption.redemption_id)
    assert entry is not None
    assert (entry.delivery.status, entry.delivery.attempts) == ("delivered", 1)
    assert await store.requeue("shop", accepted.redemption.redemption_id, utc()) is (
        Requeued.REQUEUED
    )


async def test_a_sync_job_is_never_leased_for_delivery(store: Store) -> None:
    now = utc()
    deciding = await sync_claim(store, link(), now - LATER)  # its lease long expired
    assert await store.lease_due(now + LATER, now + 2 * LATER, 10) == []
    assert await store.delivery_backlog(1.0) == (0, None)
    assert await store.requeue("shop", deciding.redemption.redemption_id, now) is (
        Requeued.DECIDING
    )


async def test_the_sweep_gives_back_what_nobody_settled_in_time(store: Store) -> None:
    now = utc()
    claims = link(max_uses=3)
    abandoned = [await sync_claim(store, claims, now - timedelta(seconds=1)) for _ in range(2)]
    held = await sync_claim(store, claims, now + LATER)
    assert await store.give_back_abandoned(now, 1) == 1
    assert await store.give_back_abandoned(now, 10) == 1
    assert await store.give_back_abandoned(now, 10) == 0
    for job in abandoned:
        assert await store.redemption("shop", job.redemption.redemption_id) is None
        # Its request, still trying to settle it, learns it was given back.
        assert not await store.accept(job, now)
    assert (await store.peek(claims)).uses == 1
    assert await store.accept(held, now)
    assert await store.give_back_abandoned(now + 2 * LATER, 10) == 0  # accepted stays
    assert await uses_of(store, claims, 3) == [4, 5, None]


async def test_peek_reads_without_writing(store: Store) -> None:
    claims = link(max_uses=2)
    state = await store.peek(claims)
    assert (state.uses, state.revoked, state.recorded_uses) == (0, False, 0)
    assert (await store.peek(claims)).uses == 0
    await uses_of(store, claims, 1)
    assert (await store.peek(claims)).uses == 1
    # Without a counter (purged), only a ``recorded`` peek counts the audit rows.
    await fetch(url_of(store), "DELETE FROM claims")
    assert (await store.peek(claims)).recorded_uses == 0
    assert (await store.peek(claims, recorded=True)).recorded_uses == 1


async def test_usage_counts_the_counter_then_the_audit_rows(store: Store) -> None:
    claims = link(max_uses=5)
    await uses_of(store, claims, 3)
    usage = await store.usage("shop", claims.link_id, claims.claim_key)
    assert (usage.uses, usage.revoked) == (3, False)
    assert usage.first_at is not None
    assert usage.last_at is not None
    assert usage.first_at <= usage.last_at
    await fetch(url_of(store), "DELETE FROM claims")
    assert (await store.usage("shop", claims.link_id, claims.claim_key)).uses == 3
    nothing = await store.usage("shop", random_link_id(), "l:none")
    assert (nothing.uses, nothing.first_at, nothing.revoked) == (0, None, False)


# --- audit log ---------------------------------------------------------------------------


async def test_the_audit_log_reads_newest_first_filtered_and_paged(store: Store) -> None:
    forever = link(max_uses=None, subject="a")
    other = link(max_uses=None, subject="b", action="subscribe")
    await uses_of(store, forever, 3)
    await uses_of(store, other, 2)
    await uses_of(store, link("mall", max_uses=None), 1)
    entries = await store.redemptions("shop", Filters(), None, 10)
    assert [e.redemption.use for e in entries] == [2, 1, 3, 2, 1]
    assert [e.seq for e in entries] == sorted((e.seq for e in entries), reverse=True)
    page = await store.redemptions("shop", Filters(), entries[1].seq, 2)
    assert page == entries[2:4]
    for filters in (
        Filters(link_id=forever.link_id),
        Filters(subject="a"),
        Filters(action="activate"),
    ):
        found = await store.redemptions("shop", filters, None, 10)
        assert [e.redemption.link_id for e in found] == [forever.link_id] * 3
    assert await store.redemption("mall", entries[0].redemption.redemption_id) is None


@pytest.mark.backends(SQLITE)
def test_redemption_ids_grow_with_time_and_keep_96_random_bits() -> None:
    """Later ids sort after earlier ones (appended at the right of their unique index),
    in any collation (hex digits first); the random part is as long as before."""
    earlier = [new_redemption_id() for _ in range(50)]
    time.sleep(0.002)
    later = new_redemption_id()
    assert all(later[:11] > e[:11] and later > e for e in earlier)
    assert all(e[:11] == e[:11].lower() and int(e[:11], 16) for e in earlier)
    assert len({e[11:] for e in earlier}) == 50
    assert all(len(e) == 27 and e[11:].replace("-", "").replace("_", "").isalnum() for e in earlier)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_uses": 1},  # its row is its claim (an index of its own, migration 0007)
        {"max_uses": 1, "once_key": "welcome"},  # draws on a once-key budget
        {"max_uses": 3},
        {"max_uses": None},
        {"max_uses": 2, "subject": None},
    ],
)
async def test_a_links_audit_rows_are_found_by_its_id_whatever_its_kind(
    store: Store, fields: dict[str, Any]
) -> None:
    """The audit rows of a link are held by two indexes (a single-use link's by its
    claim's): the queries by link id see them all, in order, page by page, and count
    them when the counter is gone."""
    claims = link(**fields)
    lookalike = dataclasses.replace(claims, client_id="mall")  # another client's, same id
    uses = len([u for u in await uses_of(store, claims, 3) if u is not None])
    await uses_of(store, lookalike, 1)
    await uses_of(store, link(**fields), 1)  # another link of the same kind
    entries = await store.redemptions("shop", Filters(link_id=claims.link_id), None, 10)
    assert [e.redemption.link_id for e in entries] == [claims.link_id] * uses
    assert [e.seq for e in entries] == sorted((e.seq for e in entries), reverse=True)
    if uses > 1:
        first = await store.redemptions("shop", Filters(link_id=claims.link_id), None, 1)
        rest = await store.redemptions("shop", Filters(link_id=claims.link_id), first[0].seq, 5)
        assert first + rest == entries
    both = Filters(link_id=claims.link_id, action="activate", subject=claims.subject)
    assert await store.redemptions("shop", both, None, 10) == entries
    await fetch(url_of(store), "DELETE FROM claims")  # counted from the audit rows now
    assert (await store.usage("shop", claims.link_id, claims.claim_key)).uses == uses
    assert (await store.peek(claims, recorded=True)).recorded_uses == uses


@pytest.mark.backends(POSTGRES)
@pytest.mark.parametrize("winner_commits", [True, False])
async def test_a_first_use_that_loses_a_race_is_refused_not_an_error(
    store: Store, winner_commits: bool
) -> None:
    """Another first use of the link inserts its row and has not committed: the claim's
    INSERT waits on the unique index, then fails on it when the other commits (and is
    run again: a refusal), or goes through when the other rolls back."""
    assert isinstance(store, PostgresStore)
    claims = link(max_uses=1)
    await uses_of(store, link(max_uses=1), 1)  # the store's connection and statement warm
    other = await asyncpg.connect(url_of(store).replace("postgresql+asyncpg://", "postgresql://"))
    try:
        racing = other.transaction()
        await racing.start()
        await other.execute(
            "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, use, max_uses,"
            " redeemed_at, via) VALUES ('winner', $1, $2, $3, 'activate', 1, 1, now(), 'link')",
            claims.client_id,
            claims.link_id,
            claims.claim_key,
        )
        ours = asyncio.create_task(store.claim(claims, utc(), deliver=False, lease=None))

        async def waiting() -> bool:
            # Blocked by this connection's transaction (not by some other test's lock).
            blocked = "SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
            return bool(await other.fetch(blocked, other.get_server_pid()))

        await eventually(waiting, timeout=5, what="the claim to wait on the racing insert")
        await (racing.commit() if winner_commits else racing.rollback())
        result = await ours
    finally:
        await other.close()
    assert result.claimed is not winner_commits
    assert not result.revoked
    rows = await fetch(
        url_of(store), "SELECT id, use FROM redemptions WHERE link_id = $1", claims.link_id
    )
    assert len(rows) == 1
    assert (rows[0]["id"] == "winner") is winner_commits
    assert store.kept_connections() >= 1  # the failed statement cost no connection


@pytest.mark.backends(POSTGRES)
async def test_a_claim_that_loses_every_race_is_a_refusal(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of runs after unique violations only (each one a winner's committed row), the
    claim refuses: the driver's error never reaches the caller, and the connection stays."""
    assert isinstance(store, PostgresStore)
    await uses_of(store, link(max_uses=1), 1)  # a kept connection
    runs = 0

    async def lost(*args: object, **kwargs: object) -> object:
        nonlocal runs
        runs += 1
        raise asyncpg.UniqueViolationError("duplicate key value")

    monkeypatch.setattr(asyncpg.connection.Connection, "fetchrow", lost)
    result = await store.claim(link(max_uses=1), utc(), deliver=False, lease=None)
    assert (result.claimed, result.revoked, runs) == (False, False, postgres.MAX_RACE_RETRIES)
    assert store.kept_connections() >= 1


# Other links' audit rows of client ``shop``, half of single-use links, half not.
FILLER_ROWS = """
INSERT INTO redemptions (id, client_id, link_id, claim_key, action, use, max_uses, redeemed_at)
SELECT 'filler-' || n, 'shop', 'filler-' || n, 'l:filler-' || n, 'go', 1,
       CASE WHEN n % 2 = 0 THEN 1 END, now()
FROM generate_series(1, 2000) AS n
"""


@pytest.mark.backends(POSTGRES)
async def test_the_queries_by_link_id_can_be_served_by_both_of_its_indexes(store: Store) -> None:
    """Each side of a query by link id states its index's condition, so PostgreSQL can
    plan it on that index (tried with sequential scans off: a small table would
    rightly be read whole). The conditions are constants, not parameters, so a
    prepared statement's generic plan can use the indexes too. The client holds
    2,000 other rows, analysed, as a used service's would: on a table of one row
    every index costs the same and the planner's pick among them is a tie."""
    assert isinstance(store, PostgresStore)
    claims = link(max_uses=1)
    await uses_of(store, claims, 1)
    statements: list[tuple[str, tuple[Any, ...]]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "FROM redemptions" in statement and "link_id" in statement:
            statements.append((statement, tuple(parameters)))

    event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        await store.redemptions("shop", Filters(link_id=claims.link_id), None, 10)
        await store.usage("shop", claims.link_id, claims.claim_key)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
    peek = store._peek[True]
    statements.append((peek.sql, tuple(peek.arguments(peek_params(claims)))))
    assert len(statements) == 3
    dsn = url_of(store).replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(FILLER_ROWS)
        await conn.execute("ANALYZE redemptions")
        await conn.execute("SET enable_seqscan = off")
        for statement, parameters in statements:
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {statement}", *parameters))
            assert "ux_redemptions_single_use" in plan, plan
            assert "ix_redemptions_client_link_seq" in plan, plan
            assert "Seq Scan on redemptions" not in plan, plan
    finally:
        await conn.close()


# --- outbox --------------------------------------------------------------------------------


async def test_a_job_is_leased_recorded_only_under_its_lease_and_released(store: Store) -> None:
    now = utc()
    result = await store.claim(link(), now, deliver=True, lease=None)
    assert result.redemption is not None
    assert (await store.delivery_backlog(1.0))[0] == 1
    lease = now + LATER
    [job] = await store.lease_due(now, lease, 10)
    assert (job.redemption, job.attempts, job.lease) == (result.redemption, 0, lease)
    assert await store.lease_due(now, lease, 10) == []  # held
    lost = type(job)(job.redemption, job.attempts, lease - LATER / 2)
    retry = AttemptOutcome(delivered=False, error="HTTP 503", retry_at=now)
    assert not await store.record_attempt(lost, now, retry)
    assert await store.record_attempt(job, now, retry)
    [again] = await store.lease_due(now, lease, 10)
    assert again.attempts == 1
    await store.release({again.redemption.redemption_id: again.lease})
    [third] = await store.lease_due(now, lease, 10)
    delivered = AttemptOutcome(delivered=True, error=None, retry_at=None)
    assert await store.record_attempt(third, now, delivered)
    entry = await store.redemption("shop", job.redemption.redemption_id)
    assert entry is not None
    assert (entry.delivery.status, entry.delivery.attempts) == ("delivered", 2)
    assert await store.delivery_backlog(1.0) == (0, None)


async def test_the_outbox_look_finds_exactly_what_a_round_would(store: Store) -> None:
    """The dispatcher's one read before a round: a job due or a sync redemption left
    unsettled is never missed, and an idle outbox reads as idle."""
    now = utc()
    assert await store.outbox_work(now) == OutboxWork(due=False, abandoned=False)
    await store.claim(link(), now, deliver=True, lease=None)  # due from now
    assert await store.outbox_work(now - timedelta(seconds=1)) == OutboxWork(False, False)
    assert await store.outbox_work(now) == OutboxWork(due=True, abandoned=False)
    [job] = await store.lease_due(now, now + LATER, 10)
    assert not (await store.outbox_work(now)).due  # held by a live lease
    assert (await store.outbox_work(now + 2 * LATER)).due  # its holder's lease expired
    retry = AttemptOutcome(delivered=False, error="HTTP 503", retry_at=now + LATER)
    assert await store.record_attempt(job, now, retry)
    assert not (await store.outbox_work(now)).due
    assert (await store.outbox_work(now + LATER)).due  # the retry falls due
    delivered = AttemptOutcome(delivered=True, error=None, retry_at=None)
    [again] = await store.lease_due(now + LATER, now + 2 * LATER, 10)
    assert await store.record_attempt(again, now + LATER, delivered)
    assert not (await store.outbox_work(now + 3 * LATER)).due  # delivered: never again
    await sync_claim(store, link(), now + LATER)  # its request awaits the verdict
    assert await store.outbox_work(now) == OutboxWork(due=False, abandoned=False)
    assert await store.outbox_work(now + 2 * LATER) == OutboxWork(due=False, abandoned=True)
    assert await store.give_back_abandoned(now + 2 * LATER, 10) == 1
    assert await store.outbox_work(now + 2 * LATER) == OutboxWork(False, False)


async def test_a_claim_can_lease_its_own_job_for_the_inline_attempt(store: Store) -> None:
    now = utc()
    await store.claim(link(), now, deliver=True, lease=now + LATER)
    assert await store.lease_due(now, now + 2 * LATER, 10) == []


async def test_a_failed_job_is_requeued_only_for_its_client(store: Store) -> None:
    now = utc()
    hooked = await store.claim(link(), now, deliver=True, lease=None)
    plain = await store.claim(link(), now, deliver=False, lease=None)
    assert hooked.redemption is not None
    assert plain.redemption is not None
    [job] = await store.lease_due(now, now + LATER, 10)
    failed = AttemptOutcome(delivered=False, error="HTTP 500", retry_at=None)
    assert await store.record_attempt(job, now, failed)
    assert await store.delivery_backlog(1.0) == (0, None)
    hooked_id = hooked.redemption.redemption_id
    assert await store.requeue("mall", hooked_id, now) is Requeued.UNKNOWN
    assert await store.requeue("shop", plain.redemption.redemption_id, now) is Requeued.NO_WEBHOOK
    assert await store.requeue("shop", hooked_id, now) is Requeued.REQUEUED
    [again] = await store.lease_due(now, now + LATER, 10)
    assert again.attempts == 0


# --- finishing the flow: the door, exchanges, wrong typed codes -----------------------------


async def test_a_claim_records_its_door_and_once_key(store: Store) -> None:
    plain = await store.claim(link(), utc(), deliver=False, lease=None)
    typed = await store.claim(
        link(once_key="voucher:1"), utc(), deliver=False, lease=None, via=Via.CODE
    )
    for result, via, once_key in ((plain, Via.LINK, None), (typed, Via.CODE, "voucher:1")):
        assert result.redemption is not None
        assert (result.redemption.via, result.redemption.once_key) == (via, once_key)
        entry = await store.redemption("shop", result.redemption.redemption_id)
        assert entry is not None
        assert entry.redemption == result.redemption  # read back exactly as reported
        assert entry.redemption.exchanged_at is None


async def test_a_redemption_is_exchanged_once_by_its_client_while_young(store: Store) -> None:
    redeemed = utc()
    result = await store.claim(link(), redeemed, deliver=False, lease=None)
    assert result.redemption is not None
    rid = result.redemption.redemption_id
    since = redeemed - timedelta(seconds=300)
    assert await store.exchange("mall", rid, redeemed, since) == Exchange(False, None)
    assert await store.exchange("shop", "no-such-id", redeemed, since) == Exchange(False, None)
    too_old = await store.exchange("shop", rid, redeemed, redeemed)  # not redeemed after since
    assert not too_old.won
    assert too_old.entry is not None
    assert too_old.entry.redemption == result.redemption  # read back, still not exchanged
    exchanged = redeemed + timedelta(seconds=1)
    first = await store.exchange("shop", rid, exchanged, since)
    assert first.won
    assert first.entry is not None
    assert first.entry.redemption.exchanged_at == exchanged
    again = await store.exchange("shop", rid, exchanged + LATER, since)  # once
    assert not again.won
    assert again.entry == first.entry


async def test_concurrent_exchanges_of_one_redemption_let_exactly_one_win(store: Store) -> None:
    now = utc()
    result = await store.claim(link(), now, deliver=False, lease=None)
    assert result.redemption is not None
    rid, since = result.redemption.redemption_id, now - timedelta(seconds=300)
    done = await asyncio.gather(*(store.exchange("shop", rid, utc(), since) for _ in range(20)))
    assert [d.won for d in done].count(True) == 1
    # Every loser read the winner's exchange.
    assert len({d.entry.redemption.exchanged_at for d in done if d.entry is not None}) == 1


async def test_wrong_codes_count_up_to_the_limit_per_link_and_client(store: Store) -> None:
    expires = utc() + LATER
    assert await store.code_failures("shop", "L1") == 0
    counted = [await store.add_code_failure("shop", "L1", expires, 3) for _ in range(5)]
    assert counted == [1, 2, 3, None, None]
    assert await store.code_failures("shop", "L1") == 3
    assert await store.code_failures("shop", "L2") == 0
    assert await store.code_failures("mall", "L1") == 0
    # Concurrent failures: the limit holds, each below it counted exactly once.
    raced = await asyncio.gather(
        *(store.add_code_failure("shop", "L3", expires, 5) for _ in range(20))
    )
    assert sorted(n for n in raced if n is not None) == [1, 2, 3, 4, 5]
    assert await store.code_failures("shop", "L3") == 5


async def test_wrong_code_counts_are_purged_with_their_link(store: Store) -> None:
    now = utc()
    await store.add_code_failure("shop", "gone", now - LATER, 5)
    await store.add_code_failure("shop", "live", now + LATER, 5)
    async with store.purging() as batches:
        assert batches is not None
        assert await batches.delete_batch(CODE_FAILURES, now, 10) == 1
    assert await store.code_failures("shop", "gone") == 0
    assert await store.code_failures("shop", "live") == 1


# --- abuse limits ----------------------------------------------------------------------------

MINUTE = timedelta(minutes=1)


async def test_failures_count_up_per_scope_and_address_within_a_window(store: Store) -> None:
    start = utc()
    counts = [await store.count_failure("auth", "192.0.2.1", start, MINUTE) for _ in range(3)]
    assert [c.failures for c in counts] == [1, 2, 3]
    # The window is the first failure's: later failures do not move its end.
    assert {c.window_ends for c in counts} == {start + MINUTE}
    assert (await store.count_failure("link", "192.0.2.1", start, MINUTE)).failures == 1
    assert (await store.count_failure("auth", "192.0.2.2", start, MINUTE)).failures == 1
    assert (await store.count_failure("auth", "192.0.2.1", start, MINUTE)).failures == 4


async def test_a_failure_after_the_window_starts_a_new_one(store: Store) -> None:
    start = utc()
    for _ in range(5):
        await store.count_failure("auth", "192.0.2.1", start, MINUTE)
    just_before = await store.count_failure("auth", "192.0.2.1", start + MINUTE / 2, MINUTE)
    assert (just_before.failures, just_before.window_ends) == (6, start + MINUTE)
    later = start + MINUTE
    again = await store.count_failure("auth", "192.0.2.1", later, MINUTE)
    assert (again.failures, again.window_ends) == (1, later + MINUTE)
    rows = await fetch(url_of(store), "SELECT failures FROM failure_counters")
    assert [r["failures"] for r in rows] == [1]  # one row per scope and address, reset


async def test_concurrent_failures_are_each_counted_once(store: Store) -> None:
    """One atomic statement each: no two failures read the same count."""
    now = utc()
    counts = await asyncio.gather(
        *(store.count_failure("link", "2001:db8::/64", now, MINUTE) for _ in range(20))
    )
    assert sorted(c.failures for c in counts) == list(range(1, 21))


async def test_purge_deletes_failure_counters_whose_window_has_ended(store: Store) -> None:
    now = utc()
    await store.count_failure("auth", "192.0.2.1", now - 2 * MINUTE, MINUTE)  # ended
    await store.count_failure("auth", "192.0.2.2", now, MINUTE)  # running
    async with store.purging() as batches:
        assert batches is not None
        assert await batches.delete_batch(FAILURE_COUNTERS, now, 10) == 1
    rows = await fetch(url_of(store), "SELECT address FROM failure_counters")
    assert [r["address"] for r in rows] == ["192.0.2.2"]


# --- purge -----------------------------------------------------------------------------------


async def test_purge_batches_delete_before_the_cutoff_only(store: Store) -> None:
    now = utc()
    # Links of two uses: they have counters on both databases (a single-use link's
    # audit row is its claim on PostgreSQL; the next test purges those).
    for _ in range(5):
        await store.claim(
            link(expires_at=int(now.timestamp()) - 60, max_uses=2), now, deliver=False, lease=None
        )
    await store.claim(link(max_uses=2), now, deliver=False, lease=None)
    await store.claim(link(once_key="forever"), now, deliver=False, lease=None)
    await store.revoke_link("shop", random_link_id(), now - LATER, now - LATER / 2)
    await store.revoke_subject("shop", "7", ALL_ACTIONS, now - LATER, now - LATER / 2)
    async with store.purging() as batches:
        assert batches is not None
        assert await batches.delete_batch(CLAIMS, now, 2) == 2
        assert await batches.delete_batch(CLAIMS, now, 10) == 3
        assert await batches.delete_batch(CLAIMS, now, 10) == 0
        assert await batches.delete_batch(REVOCATIONS, now, 10) == 1
        assert await batches.delete_batch(SUBJECT_REVOCATIONS, now, 10) == 1
        assert await batches.delete_batch(REDEMPTIONS, now - LATER, 10) == 0
        assert await batches.delete_batch(REDEMPTIONS, now + LATER, 10) == 7
    rows = await fetch(url_of(store), "SELECT key FROM claims")
    assert len(rows) == 2  # the live link's counter, and the once key's budget


async def test_purging_the_audit_log_never_makes_a_used_link_usable_again(store: Store) -> None:
    """Audit rows go at the retention cutoff (API.md), also where a single-use link's
    row is its claim (PostgreSQL): the link keeps a used-up counter instead."""
    now = utc()
    expires = now + 2 * timedelta(days=1)
    claims = link(expires_at=int(expires.timestamp()))
    assert await uses_of(store, claims, 1) == [1]
    async with store.purging() as batches:
        assert batches is not None
        assert await batches.delete_batch(REDEMPTIONS, now + timedelta(days=1), 10) == 1
    assert await store.redemptions("shop", Filters(link_id=claims.link_id), None, 10) == []
    assert (await store.peek(claims)).exhausted(claims.max_uses)
    assert await uses_of(store, claims, 1) == [None]
    # The counter goes with the link's expiry, like every counter.
    async with store.purging() as batches:
        assert batches is not None
        assert await batches.delete_batch(CLAIMS, expires + timedelta(days=1), 10) == 1


async def audit_rows_at(store: Store, *moments: datetime) -> list[LinkClaims]:
    """One single-use link's audit row per moment, written in this order (``seq``):
    how a row of a request whose ``now`` came before another's lands behind it."""
    links = [link() for _ in moments]
    for claims, moment in zip(links, moments, strict=True):
        assert (await store.claim(claims, moment, deliver=False, lease=None)).claimed
    return links


async def audit_log(store: Store) -> list[datetime]:
    return [e.redemption.redeemed_at for e in await store.redemptions("shop", Filters(), None, 50)]


async def test_the_audit_walk_reaches_old_rows_behind_newer_ones_and_keeps_the_newer(
    store: Store,
) -> None:
    """Purge walks the audit log by ``seq`` (no index on ``redeemed_at``, 0008): rows a
    little out of order are deleted behind a newer row as long as their batch holds
    old rows, the newer rows never; every purged link stays used (its claim's counter
    made in the batch that deletes its row)."""
    now, retention = utc(), timedelta(days=1)
    old, new = now - retention - MINUTE, now - retention + MINUTE
    moments = (old, old, new, old, old, new, new, old)
    #  batches of 2: [old old] [new old] [old new] [new old] [], the walk's end
    links = await audit_rows_at(store, *moments)
    report = await purge(store, now, retention, batch_size=2)
    assert report.redemptions == 5
    assert await audit_log(store) == [new, new, new]
    for claims, moment in zip(links, moments, strict=True):
        assert (await store.peek(claims)).exhausted(1), moment


async def test_the_audit_walk_ends_at_a_batch_of_newer_rows(store: Store) -> None:
    """A batch without an old row ends the walk: the old rows behind it wait for a run
    whose cutoff has passed those newer rows. Each cutoff walks from the start."""
    cutoff = utc() - timedelta(days=1)
    old, new, newest = cutoff - MINUTE, cutoff + MINUTE, cutoff + 2 * MINUTE
    await audit_rows_at(store, old, old, new, new, old, new, newest)
    async with store.purging() as batches:
        assert batches is not None
        assert await batches.delete_batch(REDEMPTIONS, cutoff, 2) == 2
        assert await batches.delete_batch(REDEMPTIONS, cutoff, 2) == 0  # [new new]: the end
        assert await audit_log(store) == [newest, new, old, new, new]
        # A cutoff past the newer rows reaches the old one behind them.
        between = new + MINUTE / 2
        assert await batches.delete_batch(REDEMPTIONS, between, 3) == 3  # [new new old]
        assert await batches.delete_batch(REDEMPTIONS, between, 3) == 1  # [new newest]
        assert await batches.delete_batch(REDEMPTIONS, between, 3) == 0
        assert await audit_log(store) == [newest]
        # A later cutoff walks from the first row again, not from where the walk of
        # another stood (past a row that is old only for the later one).
        assert await batches.delete_batch(REDEMPTIONS, newest + MINUTE, 3) == 1
    assert await audit_log(store) == []


async def test_the_audit_walk_reads_ranges_of_the_primary_key(store: Store) -> None:
    """Each statement of a batch reads a range of ``seq``, never the whole table: a
    ``SEARCH`` of the rowid on SQLite, the primary key's index on PostgreSQL (asked
    with sequential scans off: the test's table is small enough to read whole)."""
    walk = walk_of(REDEMPTIONS)
    assert walk.counters is not None
    on_postgres = isinstance(store, PostgresStore)
    explain = "EXPLAIN " if on_postgres else "EXPLAIN QUERY PLAN "
    bounds = {"cutoff": utc(), "after": 100, "last": 200, "n": 100}
    async with store.engine.connect() as conn:
        if on_postgres:
            await conn.execute(text(FILLER_ROWS))
            await conn.execute(text("ANALYZE redemptions"))
            await conn.execute(text("SET enable_seqscan = off"))
        for statement in (walk.window, walk.counters, walk.delete):
            typed = text(explain + statement.text).bindparams(
                bindparam("cutoff", type_=UTCDateTime)
            )
            plan = "\n".join(str(row[-1]) for row in await conn.execute(typed, bounds))
            if on_postgres:
                assert "Seq Scan" not in plan, plan
                assert "Index Scan using pk_redemptions" in plan.replace(" on pk_", " using pk_")
                assert "Index Cond: (seq > " in plan.replace("((", "("), plan
            else:
                assert "SEARCH redemptions USING INTEGER PRIMARY KEY (rowid>?" in plan, plan
        await conn.rollback()


@pytest.mark.backends(POSTGRES)
async def test_a_single_use_claim_writes_its_audit_row_and_no_counter(store: Store) -> None:
    claims = link()
    assert await uses_of(store, claims, 2) == [1, None]
    assert await fetch(url_of(store), "SELECT key FROM claims") == []
    [row] = await fetch(url_of(store), "SELECT use, claim_expires_at FROM redemptions")
    assert row["use"] == 1
    assert row["claim_expires_at"] == claims.expires_at_datetime
    state = await store.peek(claims)
    assert (state.uses, state.recorded_uses) == (1, 1)
    assert (await store.peek(claims, recorded=True)).recorded_uses == 1
    usage = await store.usage("shop", claims.link_id, claims.claim_key)
    assert usage.uses == 1


@pytest.mark.parametrize("max_uses", [1, 3])
async def test_a_claim_writes_a_delivery_job_only_when_asked(store: Store, max_uses: int) -> None:
    """Single-use and counted links alike: ``deliver`` adds the job, in the same claim."""
    quiet, hooked = link(max_uses=max_uses), link(max_uses=max_uses)
    assert (await store.claim(quiet, utc(), deliver=False, lease=None)).redemption is not None
    result = await store.claim(hooked, utc(), deliver=True, lease=None)
    assert result.redemption is not None
    jobs = await fetch(url_of(store), "SELECT redemption_id, status FROM deliveries")
    assert [(j["redemption_id"], j["status"]) for j in jobs] == [
        (result.redemption.redemption_id, "pending")
    ]


async def test_refusing_a_used_link_writes_nothing_and_a_revocation_still_wins(
    store: Store,
) -> None:
    """Refusals of a used single-use link leave no trace (no audit row, no sequence
    number drawn: the next use's ``seq`` follows the last one), and once the link is
    revoked as well its refusal says revoked, not used (API.md)."""
    used, other = link(), link()
    assert await uses_of(store, used, 4) == [1, None, None, None]
    assert await uses_of(store, other, 1) == [1]
    rows = await fetch(url_of(store), "SELECT link_id, seq FROM redemptions ORDER BY seq")
    assert [r["link_id"] for r in rows] == [used.link_id, other.link_id]
    assert rows[1]["seq"] == rows[0]["seq"] + 1
    await store.revoke_link("shop", used.link_id, utc(), utc() + LATER)
    refused = await store.claim(used, utc(), deliver=True, lease=None)
    assert (refused.revoked, refused.redemption) == (True, None)
    assert await fetch(url_of(store), "SELECT redemption_id FROM deliveries") == []


@pytest.mark.backends(POSTGRES)
async def test_a_counter_from_before_the_audit_row_carried_claims_still_counts(
    store: Store,
) -> None:
    """A single-use link claimed through a counter (before migration 0006) stays used."""
    claims = link()
    await fetch(
        url_of(store),
        "INSERT INTO claims (client_id, key, uses, issued, max_uses, expires_at, "
        f"first_used_at, last_used_at) VALUES ('shop', '{claims.claim_key}', 1, 1, 1, "
        "now() + interval '1 hour', now(), now())",
    )
    assert await uses_of(store, claims, 1) == [None]
    assert (await store.peek(claims)).uses == 1


@asynccontextmanager
async def postgres_store(settings: Settings, pool_size: int) -> AsyncIterator[PostgresStore]:
    store = open_store(settings.model_copy(update={"database_pool_size": pool_size}))
    assert isinstance(store, PostgresStore)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def pg_store(settings: Settings) -> AsyncIterator[PostgresStore]:
    async with postgres_store(settings, pool_size=2) as store:
        yield store


@pytest.mark.backends(POSTGRES)
def test_named_parameters_become_numbered_once_each(pg_store: PostgresStore) -> None:
    dialect = pg_store.engine.dialect
    statement = Positional.compile(
        "SELECT :a, CAST(:b AS integer), (:a)::text, x::text, '*' WHERE x = :b", dialect
    )
    assert statement.sql == "SELECT $1, CAST($2 AS integer), ($1)::text, x::text, '*' WHERE x = $2"
    assert statement.arguments({"b": 2, "a": 1}) == [1, 2]


@pytest.mark.parametrize(
    "source",
    ["SELECT :a -- the :b\n", "SELECT /* :b */ :a", "SELECT ':b', :a"],
    ids=["line comment", "block comment", "literal"],
)
@pytest.mark.backends(POSTGRES)
def test_what_sqlalchemy_would_misread_is_refused(pg_store: PostgresStore, source: str) -> None:
    """``text()`` reads a ``:name`` in a comment or a literal as a parameter too."""
    with pytest.raises(ValueError, match="no comments"):
        Positional.compile(source, pg_store.engine.dialect)


@pytest.mark.backends(POSTGRES)
async def test_waiters_are_served_in_arrival_order(pg_store: PostgresStore) -> None:
    served: list[int] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with pg_store.driver() as driver:
            await driver.fetchval("SELECT 1")
            await release.wait()

    async def wait_in_line(n: int) -> None:
        async with pg_store.driver() as driver:
            served.append(n)
            await driver.fetchval("SELECT 1")

    holders = [asyncio.ensure_future(hold()) for _ in range(2)]
    await asyncio.sleep(0.1)  # both connections are out
    waiters = []
    for n in range(8):
        waiters.append(asyncio.ensure_future(wait_in_line(n)))
        await asyncio.sleep(0.005)
    release.set()
    await asyncio.gather(*holders, *waiters)
    assert served == list(range(8))


@pytest.mark.backends(POSTGRES)
async def test_the_line_keeps_newcomers_out_of_the_pools_queue(
    pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No more checkouts wait inside the pool at once than it has connections."""
    checking_out = 0
    peak = 0
    original = AsyncEngine.raw_connection

    async def counted(self: AsyncEngine) -> PoolProxiedConnection:
        nonlocal checking_out, peak
        checking_out += 1
        peak = max(peak, checking_out)
        try:
            return await original(self)
        finally:
            checking_out -= 1

    monkeypatch.setattr(AsyncEngine, "raw_connection", counted)
    release = asyncio.Event()
    served = 0

    async def use() -> None:
        nonlocal served
        async with pg_store.driver() as driver:
            await driver.fetchval("SELECT 1")
            await release.wait()
            served += 1

    uses = [asyncio.ensure_future(use()) for _ in range(10)]
    await asyncio.sleep(0.1)  # two hold the pool's connections, eight wait in line
    release.set()
    await asyncio.gather(*uses)
    assert served == 10
    assert peak <= 2


@pytest.mark.backends(POSTGRES)
async def test_a_full_pool_ends_in_unavailable_not_a_hang(
    pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "POOL_TIMEOUT_SECONDS", 0.2)
    release = asyncio.Event()

    async def hold() -> None:
        async with pg_store.driver():
            await release.wait()

    holders = [asyncio.ensure_future(hold()) for _ in range(2)]
    await asyncio.sleep(0.1)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        async with pg_store.driver():
            pass
    waited = time.monotonic() - started
    # The line's own bound, not the pool's 5 s timeout behind it.
    assert waited < 1.0
    release.set()
    await asyncio.gather(*holders)


@pytest.mark.backends(POSTGRES)
async def test_a_failed_statement_drops_its_connection(pg_store: PostgresStore) -> None:
    failed: list[asyncpg.Connection] = []

    async def divide_by_zero() -> None:
        async with pg_store.driver() as driver:
            failed.append(driver)
            await driver.fetchval("SELECT 1/0")

    # A bug in a statement is no outage: the driver's error comes through as it is.
    with pytest.raises(asyncpg.DivisionByZeroError):
        await divide_by_zero()
    assert failed[0].is_closed()
    async with pg_store.driver() as driver:  # the pool still serves
        assert await driver.fetchval("SELECT 2") == 2


@pytest.mark.backends(POSTGRES)
async def test_a_lost_connection_is_unavailable(pg_store: PostgresStore) -> None:
    async def killed() -> None:
        async with pg_store.driver() as driver:
            await driver.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(DatabaseUnavailable) as raised:
        await killed()
    assert driver_unavailable(raised.value.__cause__ or ValueError())
    async with pg_store.driver() as driver:  # the pool still serves
        assert await driver.fetchval("SELECT 2") == 2


@pytest.mark.backends(POSTGRES)
async def test_a_cancelled_statement_drops_its_connection(pg_store: PostgresStore) -> None:
    running: list[asyncpg.Connection] = []
    started = asyncio.Event()

    async def sleep_in_the_database() -> None:
        async with pg_store.driver() as driver:
            running.append(driver)
            started.set()
            await driver.fetchval("SELECT pg_sleep(5)")

    task = asyncio.ensure_future(sleep_in_the_database())
    await started.wait()
    await asyncio.sleep(0.1)  # the statement is on the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert running[0].is_closed()
    async with pg_store.driver() as driver:  # the pool still serves
        assert await driver.fetchval("SELECT 2") == 2


def dressed(kind: type[EmulatedDBAPIException], error: Exception) -> EmulatedDBAPIException:
    """``error`` as SQLAlchemy's asyncpg adapter raises it (its DB-API classes)."""
    return kind("x", error)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (asyncpg.AdminShutdownError("x"), True),
        (asyncpg.CannotConnectNowError("x"), True),
        (asyncpg.TooManyConnectionsError("x"), True),
        (asyncpg.ConnectionDoesNotExistError("x"), True),
        (asyncpg.InterfaceError("x"), True),
        (OSError("x"), True),
        (TimeoutError(), True),
        (asyncpg.UniqueViolationError("x"), False),
        (asyncpg.DivisionByZeroError("x"), False),
        (ValueError("x"), False),
        # As the pool raises them when a new connection fails: SQLAlchemy's DB-API dress.
        (dressed(AsyncpgDBAPI.Error, asyncpg.ConnectionDoesNotExistError("x")), True),
        (dressed(AsyncpgDBAPI.InterfaceError, asyncpg.InterfaceError("x")), True),
        (dressed(AsyncpgDBAPI.Error, asyncpg.UniqueViolationError("x")), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_driver_errors_that_mean_the_database_is_unavailable(
    error: BaseException, unavailable: bool
) -> None:
    if isinstance(error, asyncpg.PostgresError):
        assert error.sqlstate  # the class carries the SQLSTATE that is read
    assert driver_unavailable(error) is unavailable


SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


@pytest.mark.backends(POSTGRES)
async def test_a_connection_dropped_while_it_is_made_is_unavailable() -> None:
    """A server that hangs up during a new connection's handshake is a 503, not a 500
    (seen under database cuts: the pool raised asyncpg's "connection was closed in the
    middle of operation" unwrapped), for the claim's direct line and for a session."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.read(8) == SSL_REQUEST:  # asyncpg asks for TLS first: refused
            writer.write(b"N")
            await reader.read(8)  # then the startup message has begun
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = open_store(Settings(database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x"))
    try:
        for operation in (
            lambda: store.claim(link(), utc(), deliver=False, lease=None),
            lambda: store.peek(link()),
        ):
            with pytest.raises(DatabaseUnavailable) as raised:
                await operation()
            assert driver_unavailable(raised.value.__cause__ or ValueError())
    finally:
        await store.close()
        server.close()


@pytest.fixture
async def roomy_store(settings: Settings) -> AsyncIterator[PostgresStore]:
    """A pool of 4: the line may keep 2 connections, 2 stay for sessions."""
    async with postgres_store(settings, pool_size=4) as store:
        yield store


@pytest.mark.backends(POSTGRES)
async def test_the_line_keeps_its_connections_and_leaves_the_sessions_theirs(
    roomy_store: PostgresStore,
) -> None:
    pool = roomy_store.engine.sync_engine.pool
    release = asyncio.Event()

    async def turn() -> int:
        async with roomy_store.driver() as driver:
            pid = int(await driver.fetchval("SELECT pg_backend_pid()"))
            await release.wait()
        return pid

    turns = [asyncio.ensure_future(turn()) for _ in range(4)]  # all four connections out
    await asyncio.sleep(0.1)
    release.set()
    first = set(await asyncio.gather(*turns))
    assert len(first) == 4
    # Two are kept for the next turns, two went back to the pool for the sessions.
    assert roomy_store.kept_connections() == 2
    assert pool.checkedout() == 2  # type: ignore[attr-defined]
    async with roomy_store.engine.connect() as a, roomy_store.engine.connect() as b:
        assert await a.scalar(text("SELECT 1")) == await b.scalar(text("SELECT 1")) == 1
    again = await turn()
    assert again in first
    assert roomy_store.kept_connections() == 2


@pytest.mark.backends(POSTGRES)
async def test_a_lost_connection_ends_the_kept_ones_too(roomy_store: PostgresStore) -> None:
    async def pid() -> int:
        async with roomy_store.driver() as driver:
            return int(await driver.fetchval("SELECT pg_backend_pid()"))

    release = asyncio.Event()

    async def hold() -> None:
        async with roomy_store.driver() as driver:
            await driver.fetchval("SELECT 1")
            await release.wait()

    holders = [asyncio.ensure_future(hold()) for _ in range(2)]
    await asyncio.sleep(0.1)
    release.set()
    await asyncio.gather(*holders)
    assert roomy_store.kept_connections() == 2
    kept = {await pid(), await pid()}
    # The server drops both (a restart, a failover). If asyncpg has not noticed yet, the
    # next turn fails as unavailable (a 503) and every kept connection goes; if it has,
    # the closed ones are passed over. Either way at most one turn fails, and the turn
    # after runs on a fresh connection.
    async with roomy_store.engine.connect() as conn:
        for backend in kept:
            await conn.execute(text(f"SELECT pg_terminate_backend({backend})"))
    outcomes: list[int | None] = []
    for _ in range(2):
        try:
            outcomes.append(await pid())
        except DatabaseUnavailable:
            outcomes.append(None)
    assert outcomes.count(None) <= 1
    assert outcomes[-1] is not None
    assert not kept & set(outcomes)


@pytest.mark.backends(POSTGRES)
async def test_a_kept_connection_the_server_closed_is_passed_over(
    roomy_store: PostgresStore,
) -> None:
    """A kept connection ended while idle (noticed when its socket closed) never costs
    a redemption a 503: the turn takes an open one, or a new one from the pool."""

    async def pid() -> int:
        async with roomy_store.driver() as driver:
            return int(await driver.fetchval("SELECT pg_backend_pid()"))

    kept = await pid()
    assert roomy_store.kept_connections() == 1
    async with roomy_store.engine.connect() as conn:
        await conn.execute(text(f"SELECT pg_terminate_backend({kept})"))
    deadline = time.monotonic() + 10
    while not all(c.driver_connection.is_closed() for c in roomy_store._kept):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "asyncpg never noticed the closed connection"
        await asyncio.sleep(0.02)
    fresh = await pid()
    assert fresh != kept
    assert roomy_store.kept_connections() == 1


@pytest.mark.backends(POSTGRES)
async def test_a_pooled_connection_the_server_closed_is_passed_over(
    roomy_store: PostgresStore,
) -> None:
    """The same for the pool's own connections (sessions, and the line's new turns): one
    ended while checked in is replaced at checkout, so the first request after the
    database came back (a restart, a cut) is served, not a 503."""
    async with roomy_store.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        pooled: asyncpg.Connection = raw.driver_connection
        pid = await conn.scalar(text("SELECT pg_backend_pid()"))
    await fetch(url_of(roomy_store), f"SELECT pg_terminate_backend({pid})")

    async def noticed() -> bool:
        return bool(pooled.is_closed())

    await eventually(noticed, timeout=10, what="asyncpg to notice the closed connection")
    for _ in range(2):  # whichever checked-in connection comes first
        async with roomy_store.engine.connect() as conn:
            assert await conn.scalar(text("SELECT pg_backend_pid()")) != pid
        async with roomy_store.driver() as driver:
            assert await driver.fetchval("SELECT pg_backend_pid()") != pid


@pytest.mark.backends(POSTGRES)
async def test_kept_connections_are_not_counted_in_use(roomy_store: PostgresStore) -> None:
    async with roomy_store.driver() as driver:
        await driver.fetchval("SELECT 1")
        metrics.sample_pool(roomy_store)
        assert REGISTRY.get_sample_value("action_links_db_pool_in_use") == 1
    assert roomy_store.kept_connections() == 1
    metrics.sample_pool(roomy_store)
    assert REGISTRY.get_sample_value("action_links_db_pool_in_use") == 0


@pytest.mark.backends(POSTGRES)
async def test_closing_the_store_closes_the_kept_connections(settings: Settings) -> None:
    store = open_store(settings.model_copy(update={"database_pool_size": 4}))
    assert isinstance(store, PostgresStore)
    async with store.driver() as driver:
        connection = driver
        await driver.fetchval("SELECT 1")
    assert store.kept_connections() == 1
    await store.close()
    assert store.kept_connections() == 0
    assert connection.is_closed()


def test_a_purge_target_that_carries_claims_must_be_walked() -> None:
    """Only the walk writes the counters of purged claims: an indexed target cannot carry them."""
    with pytest.raises(ValueError, match="carries claims"):
        PurgeTarget("redemptions", "redeemed_at", carries_claims=True)
