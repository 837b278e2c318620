"""Bounded state: purge deletes what can no longer matter, in batches, one process at a time.

The first two tests run on both databases; the others write their fixtures
with PostgreSQL's SQL (``generate_series``, intervals) or hold its advisory
lock, and SQLite's purge batches are covered by ``tests/test_store.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from service import confirm, lifecycle
from service.cli import main
from service.config import Settings
from service.main import create_app
from service.purge import CLOCK_SKEW_GRACE, purge
from service.state import AppState
from service.store.postgres import ADVISORY_LOCK_KEY
from tests.conftest import Tenant
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.links import redeem
from tests.support.processes import REPO_ROOT

Headers = dict[str, str]
RETENTION = timedelta(days=90)


async def claim_keys(database_url: str) -> set[str]:
    return {r["key"] for r in await fetch(database_url, "SELECT key FROM claims")}


async def count(database_url: str, table: str) -> int:
    return int((await fetch(database_url, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_purge_deletes_expired_state_and_keeps_the_rest(
    shop: Tenant, http: httpx.AsyncClient, state: AppState, database_url: str
) -> None:
    short = await shop.mint(expires_in=60, max_uses=3)
    long = await shop.mint(expires_in=7200, max_uses=3)
    budget = await shop.mint(expires_in=60, once_key="voucher:1", max_uses=3)
    for link in (short, long, budget):
        assert await redeem(http, link) == "success"
    revoked = await http.delete(f"/v1/links/{long['id']}", headers=shop.headers)
    assert revoked.status_code == 204
    await http.post("/v1/revocations", json={"subject": "42"}, headers=shop.headers)
    await fetch(
        database_url,
        "INSERT INTO deliveries (redemption_id, client_id, status, attempts, next_attempt_at,"
        " created_at) SELECT id, 'shop', 'pending', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP"
        " FROM redemptions",
    )
    now = datetime.now(UTC)

    # Nothing has expired yet.
    nothing = await purge(state.store, now, RETENTION)
    assert (nothing.deleted, nothing.skipped) == (0, False)

    # Past the short link's expiry (and the grace for clock skew): only its counter goes.
    report = await purge(state.store, now + timedelta(seconds=61) + CLOCK_SKEW_GRACE, RETENTION)
    assert (report.claims, report.deleted) == (1, 1)
    assert await claim_keys(database_url) == {f"l:{long['id']}", "o:voucher:1"}

    # A year and a day on: every link that could exist has expired, and the audit
    # rows are past retention. Only the once-key budget stays.
    later = now + timedelta(days=366) + CLOCK_SKEW_GRACE
    report = await purge(state.store, later, RETENTION)
    assert (report.claims, report.revocations, report.subject_revocations) == (1, 1, 1)
    assert report.redemptions == 3
    assert await claim_keys(database_url) == {"o:voucher:1"}
    for table in ("revocations", "subject_revocations", "redemptions", "deliveries"):
        assert await count(database_url, table) == 0, table

    # The budget is still counted: a link of that once key allowing one use finds it spent.
    again = await shop.mint(once_key="voucher:1", max_uses=1)
    assert await redeem(http, again) == "used"


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_a_purged_link_still_refuses_by_its_signature(
    shop: Tenant,
    http: httpx.AsyncClient,
    state: AppState,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link = await shop.mint(expires_in=60, max_uses=5)
    assert await redeem(http, link) == "success"
    expires_at = datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00"))
    # The service's clock moves past expiry, instead of the test waiting for it: the
    # clock of the redirect (confirm) and of inspect (lifecycle). A redemption judged
    # by any other clock would succeed and fail the test.
    later = expires_at + timedelta(seconds=1)
    monkeypatch.setattr(confirm, "utcnow", lambda: later)
    monkeypatch.setattr(lifecycle, "utcnow", lambda: later)

    # The clock moved past expiry (and the grace): the counter is gone...
    report = await purge(state.store, later + CLOCK_SKEW_GRACE, RETENTION)
    assert report.claims == 1
    assert await count(database_url, "claims") == 0
    # ...and the link is still refused, on its signature alone, with nothing written.
    assert await redeem(http, link) == "expired"
    assert await count(database_url, "claims") == 0
    assert await count(database_url, "redemptions") == 1
    # Inspecting it tells the use the audit log still holds, not the purged counter's 0.
    inspected = await http.post(
        "/v1/links/inspect", json={"token": link["token"]}, headers=shop.headers
    )
    assert inspected.status_code == 200, inspected.text
    body = inspected.json()
    assert (body["valid"], body["reason"]) == (False, "expired")
    assert body["link"]["uses"] == 1


async def test_failure_counters_go_once_their_window_has_passed(
    http: httpx.AsyncClient, state: AppState, database_url: str
) -> None:
    """The abuse limits' counters are bounded state too: a window that has ended is
    worth nothing (the next failure starts a new one)."""
    wrong = {"Authorization": "Bearer alk_" + "x" * 43}
    for _ in range(3):
        assert (await http.get("/v1/redemptions", headers=wrong)).status_code == 401
    assert (await http.get("/r/forged.token")).status_code == 400
    assert await count(database_url, "failure_counters") == 2  # auth and link, one address
    now = datetime.now(UTC)

    # The window (a minute, by default) is running: nothing goes.
    report = await purge(state.store, now, RETENTION)
    assert (report.failure_counters, report.deleted) == (0, 0)
    # A minute on, and the grace for clock skew: both go.
    report = await purge(state.store, now + timedelta(minutes=1) + CLOCK_SKEW_GRACE, RETENTION)
    assert (report.failure_counters, report.deleted) == (2, 2)
    assert await count(database_url, "failure_counters") == 0


async def test_retention_keeps_recent_audit_rows(
    shop: Tenant, http: httpx.AsyncClient, state: AppState, database_url: str
) -> None:
    await fetch(
        database_url,
        "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, use, redeemed_at)"
        " VALUES ('old', 'shop', 'l1', 'l:l1', 'activate', 1, now() - interval '91 days'),"
        " ('recent', 'shop', 'l2', 'l:l2', 'activate', 1, now() - interval '89 days')",
    )
    report = await purge(state.store, datetime.now(UTC), RETENTION)
    assert report.redemptions == 1
    rows = await fetch(database_url, "SELECT id FROM redemptions")
    assert [r["id"] for r in rows] == ["recent"]
    report = await purge(state.store, datetime.now(UTC), timedelta(days=30))
    assert report.redemptions == 1


async def test_batches_are_bounded(state: AppState, database_url: str) -> None:
    await fetch(
        database_url,
        "INSERT INTO claims SELECT 'shop', 'l:' || i, 1, 1, now() - interval '1 day',"
        " now(), now() FROM generate_series(1, 2500) AS i",
    )
    await fetch(
        database_url,
        "INSERT INTO claims SELECT 'shop', 'o:' || i, 1, 1, NULL, now(), now()"
        " FROM generate_series(1, 10) AS i",
    )
    report = await purge(state.store, datetime.now(UTC), RETENTION, batch_size=1000)
    assert report.claims == 2500
    assert report.batch_sizes[:4] == [1000, 1000, 500, 0]  # claims, then the other tables
    assert report.largest_batch == 1000
    assert await count(database_url, "claims") == 10


async def test_one_purge_at_a_time(state: AppState, database_url: str) -> None:
    await fetch(
        database_url,
        "INSERT INTO claims VALUES ('shop', 'l:x', 1, 1, now() - interval '1 day', now(), now())",
    )
    holder = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        report = await purge(state.store, datetime.now(UTC), RETENTION)
        assert (report.skipped, report.deleted) == (True, 0)
        assert await count(database_url, "claims") == 1
    finally:
        await holder.close()
    report = await purge(state.store, datetime.now(UTC), RETENTION)
    assert (report.skipped, report.claims) == (False, 1)
    # The lock was given back: another run can take it.
    assert not (await purge(state.store, datetime.now(UTC), RETENTION)).skipped


@pytest.fixture
async def purging_app(settings: Settings) -> AsyncIterator[None]:
    app = create_app(settings.model_copy(update={"purge_interval": 0.2}))
    async with LifespanManager(app):
        yield


async def test_every_process_purges_periodically(database_url: str, purging_app: None) -> None:
    await fetch(
        database_url,
        "INSERT INTO claims VALUES ('shop', 'l:gone', 1, 1, now() - interval '1 day', now(),"
        " now()), ('shop', 'l:live', 1, 1, now() + interval '1 day', now(), now())",
    )
    deadline = time.monotonic() + 20
    while await claim_keys(database_url) != {"l:live"}:
        assert time.monotonic() < deadline, "the periodic purge did not run"
        await asyncio.sleep(0.1)


def test_cli_purge(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    asyncio.run(
        fetch(
            database_url,
            "INSERT INTO claims VALUES ('shop', 'l:x', 1, 1, now() + interval '1 day', now(),"
            " now()), ('shop', 'o:x', 1, 1, NULL, now(), now())",
        )
    )
    assert main(["purge"]) == 0
    assert json.loads(capsys.readouterr().out)["claims"] == 0
    assert main(["purge", "--now", "2099-01-01T00:00:00Z", "--batch-size", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["claims"], report["skipped"]) == (1, False)
    assert asyncio.run(claim_keys(database_url)) == {"o:x"}
    for bad in (["--now", "2099-01-01T00:00:00"], ["--now", "soon"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["purge", *bad])
        assert exit_info.value.code == 2


@pytest.mark.slow
def test_purge_at_scale_in_bounded_batches(database_url: str) -> None:
    """bench/purge_scale.py, smaller by default; PURGE_SCALE_ROWS=1000000 for the full size."""
    rows = int(os.environ.get("PURGE_SCALE_ROWS", "20000"))
    batch_size = 2000
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.purge_scale",
            "--database-url",
            database_url,
            "--rows",
            str(rows),
            "--live",
            "500",
            "--batch-size",
            str(batch_size),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    output: dict[str, Any] = json.loads(result.stdout)
    report = output["report"]
    assert report["claims"] == rows
    assert report["largest_batch"] == batch_size
    assert report["batches"] >= rows // batch_size
    assert set(output["batch_sizes"]) <= set(range(batch_size + 1))
    assert output["left"] == {"expired": 0, "live": 500, "budgets": 500}
