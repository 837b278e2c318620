"""First uses that find the direct line full are claimed together (store/claim_batch.py).

Each test fills the line by holding every place in it, queues claims behind it, then
lets go: the next turn claims the whole queue in one statement. What must hold is what
holds for a claim alone: one audit row per claimed link and none for a refused one,
refusals that say why (revoked or used), exactly once under races, and the line's
failures reaching every waiting claim.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.db import open_store
from service.errors import DatabaseUnavailable
from service.store import ClaimResult, claim_batch, postgres
from service.store.postgres import PostgresStore
from service.tokens import LinkClaims
from service.tracing import Tracing
from tests.support.database import fetch
from tests.support.links import link_claims as link

LATER = timedelta(hours=1)
POOL = 2


def utc() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[PostgresStore]:
    opened = open_store(settings.model_copy(update={"database_pool_size": POOL}))
    assert isinstance(opened, PostgresStore)
    yield opened
    await opened.close()


def url_of(store: PostgresStore) -> str:
    return store.engine.url.render_as_string(hide_password=False)


@asynccontextmanager
async def line_full(store: PostgresStore) -> AsyncIterator[None]:
    """Every place in the line held until the block ends, then given back."""
    release = asyncio.Event()
    held = [asyncio.Event() for _ in range(POOL)]

    async def hold(place: asyncio.Event) -> None:
        async with store.driver():
            place.set()
            await release.wait()

    holders = [asyncio.ensure_future(hold(place)) for place in held]
    for place in held:
        await place.wait()
    try:
        yield
    finally:
        release.set()
        await asyncio.gather(*holders)


async def claimed_together(
    store: PostgresStore,
    links: list[LinkClaims],
    before: Callable[[], Awaitable[None]] | None = None,
) -> list[ClaimResult]:
    """Claim ``links`` while the line is full, so that they queue, then free it."""
    async with line_full(store):
        claims = [
            asyncio.ensure_future(store.claim(one, utc(), deliver=False, lease=None))
            for one in links
        ]
        await asyncio.sleep(0.05)  # every claim queued
        assert not any(claim.done() for claim in claims)
        if before is not None:
            await before()
    return list(await asyncio.gather(*claims))


def batches_fail(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Every batch statement raises ``error`` instead of running; other statements run."""
    original = asyncpg.connection.Connection.fetch

    async def failing(self: asyncpg.Connection, *args: object, **kwargs: object) -> object:
        if "unnest" in str(args[0]):
            raise error
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", failing)


def pool_waits() -> tuple[float, float]:
    """How many waits for a connection this process has counted, and their seconds."""
    name = "action_links_db_pool_wait_seconds"
    count = REGISTRY.get_sample_value(f"{name}_count") or 0.0
    return count, REGISTRY.get_sample_value(f"{name}_sum") or 0.0


async def audit_rows(store: PostgresStore, one: LinkClaims) -> list[asyncpg.Record]:
    return await fetch(
        url_of(store),
        "SELECT id, use, subject, data::text AS data, via, claim_expires_at FROM redemptions"
        " WHERE link_id = $1",
        one.link_id,
    )


async def test_queued_first_uses_are_claimed_in_one_statement(store: PostgresStore) -> None:
    links = [link() for _ in range(20)]
    waits_before, seconds_before = pool_waits()
    results = await claimed_together(store, links)
    assert store.claim_batches() == 1
    # The pool-wait histogram counts each claim's own wait (>= the 0.05 s they stay
    # queued), not the turn's one wait for all of them; and each holder's.
    waits, seconds = pool_waits()
    assert waits - waits_before == POOL + len(links)
    assert seconds - seconds_before >= len(links) * 0.05
    ids = set()
    for one, result in zip(links, results, strict=True):
        assert result.redemption is not None
        assert not result.revoked
        assert result.redemption.link_id == one.link_id
        assert result.redemption.use == 1
        rows = await audit_rows(store, one)
        assert len(rows) == 1
        assert rows[0]["id"] == result.redemption.redemption_id
        assert (rows[0]["use"], rows[0]["subject"], rows[0]["via"]) == (1, "42", "link")
        assert rows[0]["data"] == '{"k": ["v", 1]}'
        assert rows[0]["claim_expires_at"] == one.expires_at_datetime
        ids.add(result.redemption.redemption_id)
    assert len(ids) == len(links)
    for one in links:  # and each is used now, alone or together
        assert not (await store.claim(one, utc(), deliver=False, lease=None)).claimed
    assert [r.claimed for r in await claimed_together(store, links[:5])] == [False] * 5


async def test_a_batch_refuses_used_and_revoked_links_each_for_its_reason(
    store: PostgresStore,
) -> None:
    now = utc()
    used, revoked, fresh = link(), link(), link()
    of_subject = link(subject="7", issued_at_us=(time.time_ns() // 1000) - 1)
    assert (await store.claim(used, now, deliver=False, lease=None)).claimed
    await store.revoke_link("shop", revoked.link_id, now, now + LATER)
    await store.revoke_subject("shop", "7", "activate", utc(), now + LATER)
    also_used_and_revoked = link()
    assert (await store.claim(also_used_and_revoked, now, deliver=False, lease=None)).claimed
    await store.revoke_link("shop", also_used_and_revoked.link_id, now, now + LATER)
    links = [used, revoked, fresh, of_subject, also_used_and_revoked]
    results = await claimed_together(store, links)
    assert store.claim_batches() == 1
    outcomes = [(r.claimed, r.revoked) for r in results]
    assert outcomes == [(False, False), (False, True), (True, False), (False, True), (False, True)]
    assert [len(await audit_rows(store, one)) for one in links] == [1, 0, 1, 0, 1]


async def test_a_link_twice_in_a_batch_is_claimed_once(store: PostgresStore) -> None:
    """The batch fails on the unique index as a whole; each claim then runs alone."""
    twice = link()
    others = [link(), link()]
    results = await claimed_together(store, [others[0], twice, twice, others[1]])
    assert [r.claimed for r in results[::3]] == [True, True]
    assert sorted(r.claimed for r in results[1:3]) == [False, True]
    assert not any(r.revoked for r in results)
    assert len(await audit_rows(store, twice)) == 1
    assert store.claim_batches() == 0  # the batch inserted nothing: each claim ran alone


async def test_a_batch_ended_by_a_deadlock_is_claimed_one_by_one(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = [link() for _ in range(3)]
    batches_fail(monkeypatch, asyncpg.DeadlockDetectedError("deadlock detected"))
    results = await claimed_together(store, links)
    assert [r.claimed for r in results] == [True, True, True]
    assert store.claim_batches() == 0
    assert [len(await audit_rows(store, one)) for one in links] == [1, 1, 1]


async def test_a_link_claimed_meanwhile_elsewhere_is_refused_and_the_rest_claimed(
    store: PostgresStore,
) -> None:
    """Another process claims a link of the queue before the batch runs: that link is
    refused, the others go through, and there is one audit row each."""
    raced, others = link(), [link() for _ in range(3)]

    async def elsewhere() -> None:
        other = open_store(Settings(database_url=url_of(store)))
        try:
            assert (await other.claim(raced, utc(), deliver=False, lease=None)).claimed
        finally:
            await other.close()

    results = await claimed_together(store, [*others, raced], before=elsewhere)
    assert [r.claimed for r in results] == [True, True, True, False]
    assert [len(await audit_rows(store, one)) for one in [*others, raced]] == [1, 1, 1, 1]


async def test_two_batches_of_the_same_links_claim_each_once(
    store: PostgresStore, settings: Settings
) -> None:
    """Two processes' batches of the same links, queued in opposite orders, run at once:
    every link is claimed by exactly one of them, and neither fails."""
    other = open_store(settings.model_copy(update={"database_pool_size": POOL}))
    assert isinstance(other, PostgresStore)
    links: list[LinkClaims] = []
    try:
        for _ in range(3):
            fresh = [link() for _ in range(12)]
            ours, theirs = await asyncio.gather(
                claimed_together(store, fresh), claimed_together(other, fresh[::-1])
            )
            won = [a.claimed + b.claimed for a, b in zip(ours, theirs[::-1], strict=True)]
            assert won == [1] * len(fresh)
            assert not any(r.revoked for r in [*ours, *theirs])
            links += fresh
    finally:
        await other.close()
    assert [len(await audit_rows(store, one)) for one in links] == [1] * 36


async def test_a_cancelled_queued_claim_is_left_out(store: PostgresStore) -> None:
    kept, dropped = link(), link()
    async with line_full(store):
        claims = [
            asyncio.ensure_future(store.claim(one, utc(), deliver=False, lease=None))
            for one in (kept, dropped)
        ]
        await asyncio.sleep(0.05)
        claims[1].cancel()
    assert (await claims[0]).claimed
    with pytest.raises(asyncio.CancelledError):
        await claims[1]
    assert len(await audit_rows(store, kept)) == 1
    assert await audit_rows(store, dropped) == []


async def test_a_line_that_stays_full_fails_every_queued_claim(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "POOL_TIMEOUT_SECONDS", 0.2)
    links = [link() for _ in range(3)]
    waits_before, seconds_before = pool_waits()
    async with line_full(store):
        claims = [
            asyncio.ensure_future(store.claim(one, utc(), deliver=False, lease=None))
            for one in links
        ]
        done = await asyncio.wait(claims, timeout=2)
        assert len(done[0]) == 3
    for claim in claims:
        with pytest.raises(DatabaseUnavailable):
            claim.result()
    waits, seconds = pool_waits()  # each claim's wait that ended without a connection
    assert waits - waits_before == POOL + len(links)
    assert seconds - seconds_before >= len(links) * 0.2
    assert [await audit_rows(store, one) for one in links] == [[], [], []]
    # The line is free again: claims go through.
    assert (await store.claim(links[0], utc(), deliver=False, lease=None)).claimed


async def test_a_lost_database_fails_the_batch_as_unavailable(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = [link() for _ in range(3)]
    batches_fail(monkeypatch, asyncpg.ConnectionDoesNotExistError("connection was closed"))
    async with line_full(store):
        claims = [
            asyncio.ensure_future(store.claim(one, utc(), deliver=False, lease=None))
            for one in links
        ]
        await asyncio.sleep(0.05)
    for claim in await asyncio.gather(*claims, return_exceptions=True):
        assert isinstance(claim, DatabaseUnavailable)
    monkeypatch.undo()
    assert (await store.claim(links[0], utc(), deliver=False, lease=None)).claimed


async def test_more_than_a_statement_holds_lines_up_another_turn(store: PostgresStore) -> None:
    links = [link() for _ in range(claim_batch.MAX_BATCH + 6)]
    results = await claimed_together(store, links)
    assert all(r.claimed for r in results)
    assert store.claim_batches() == 2
    assert [len(await audit_rows(store, one)) for one in links] == [1] * len(links)


async def test_other_claims_do_not_queue(store: PostgresStore) -> None:
    """Multi-use links, once keys and claims with a delivery job wait in line as before."""
    others = [(link(max_uses=3), False), (link(max_uses=1, once_key="voucher-1"), False)]
    others += [(link(), True) for _ in range(3)]
    async with line_full(store):
        claims = [
            asyncio.ensure_future(store.claim(one, utc(), deliver=deliver, lease=None))
            for one, deliver in others
        ]
        await asyncio.sleep(0.05)
    assert all(r.claimed for r in await asyncio.gather(*claims))
    assert store.claim_batches() == 0


async def test_a_traced_store_claims_each_link_in_its_own_span(settings: Settings) -> None:
    """With tracing on, a queued first use is no batch's: each claim is its statement."""
    spans: list[str] = []

    class Recording(Tracing):
        def statement(
            self, engine: AsyncEngine, operation: str, sql: str
        ) -> AbstractContextManager[None]:
            spans.append(operation)
            return nullcontext()

    traced = open_store(settings.model_copy(update={"database_pool_size": POOL}), Recording())
    assert isinstance(traced, PostgresStore)
    try:
        results = await claimed_together(traced, [link() for _ in range(3)])
    finally:
        await traced.close()
    assert all(r.claimed for r in results)
    assert traced.claim_batches() == 0
    assert spans == ["claim"] * 3
