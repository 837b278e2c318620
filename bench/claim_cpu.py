"""PostgreSQL CPU per claim: the store's claim statement against the baseline's insert.

``python -m bench.claim_cpu [--statements N] [--block B]`` creates a fresh
database, then runs, one statement at a time on one connection each, the
PostgreSQL store's claim of a never-used single-use link ("first use") and of
a used one ("exhausted", 50 links in turn), and the baseline's ``INSERT … ON
CONFLICT DO NOTHING`` of a new and of an existing row. Blocks of ``B``
statements alternate between the arms, each block's CPU is read from the
backend's ``/proc/<pid>/schedstat`` (nanoseconds, on-CPU time only), and the
report gives the minimum, first quartile and median over blocks in µs per
statement: the minimum is the least disturbed by others on a shared machine.

Sequential, so every first use pays its own WAL flush (under load, commits
share flushes); what it isolates is the statement's own work, which is what a
change to the SQL or the schema changes. The store's Python time per claim is
printed too (the process's CPU, so it includes the socket calls).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import database
from bench.database import SERVER_URL
from service.config import Settings
from service.store.postgres import PostgresStore, create_engine
from service.tokens import LinkClaims

USED_LINKS = 50
BASELINE_INSERT = (
    "INSERT INTO baseline_redemptions (link_id, action, subject) VALUES ($1, $2, $3) "
    "ON CONFLICT (link_id) DO NOTHING RETURNING link_id"
)


def backend_cpu_us(pid: int) -> float:
    """On-CPU time of one backend so far, in µs (``schedstat``: nanoseconds)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e3


def new_link(now: datetime) -> LinkClaims:
    return LinkClaims(
        link_id=secrets.token_urlsafe(15),
        client_id="bench",
        action="go",
        subject="user-1",
        data={"order": 42},
        issued_at_us=int(now.timestamp() * 1e6),
        expires_at=int(now.timestamp()) + 86_400,
        max_uses=1,
    )


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    low, quartile, median = ordered[0], ordered[len(ordered) // 4], ordered[len(ordered) // 2]
    return f"min {low:6.1f}  q1 {quartile:6.1f}  median {median:6.1f}"


async def measure(dsn: str, statements: int, block: int) -> None:
    settings = Settings(database_url=dsn, secret_keys="x" * 48, database_pool_size=3)
    store = PostgresStore(create_engine(settings))
    baseline: Any = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with store.driver() as driver:
            store_pid = int(await driver.fetchval("SELECT pg_backend_pid()"))
        baseline_pid = int(await baseline.fetchval("SELECT pg_backend_pid()"))
        now = datetime.now(UTC)
        used = [new_link(now) for _ in range(USED_LINKS)]
        for link in used:
            await store.claim(link, now, deliver=False, lease=None)
        used_ids = [secrets.token_urlsafe(15) for _ in range(USED_LINKS)]
        for link_id in used_ids:
            await baseline.fetchrow(BASELINE_INSERT, link_id, "go", "user-1")
        pg: dict[str, list[float]] = {
            "claim, first use": [],
            "claim, exhausted": [],
            "baseline, first use": [],
            "baseline, exhausted": [],
        }
        python: dict[str, list[float]] = {"first use": [], "exhausted": []}
        for _ in range(max(1, statements // block)):
            fresh = [new_link(now) for _ in range(block)]
            cpu0, py0 = backend_cpu_us(store_pid), time.process_time()
            for link in fresh:
                assert (await store.claim(link, now, deliver=False, lease=None)).claimed
            cpu1, py1 = backend_cpu_us(store_pid), time.process_time()
            for i in range(block):
                refused = await store.claim(used[i % USED_LINKS], now, deliver=False, lease=None)
                assert not refused.claimed
            cpu2, py2 = backend_cpu_us(store_pid), time.process_time()
            pg["claim, first use"].append((cpu1 - cpu0) / block)
            pg["claim, exhausted"].append((cpu2 - cpu1) / block)
            python["first use"].append((py1 - py0) / block * 1e6)
            python["exhausted"].append((py2 - py1) / block * 1e6)
            ids = [secrets.token_urlsafe(15) for _ in range(block)]
            cpu0 = backend_cpu_us(baseline_pid)
            for link_id in ids:
                await baseline.fetchrow(BASELINE_INSERT, link_id, "go", "user-1")
            cpu1 = backend_cpu_us(baseline_pid)
            for i in range(block):
                await baseline.fetchrow(BASELINE_INSERT, used_ids[i % USED_LINKS], "go", "user-1")
            cpu2 = backend_cpu_us(baseline_pid)
            pg["baseline, first use"].append((cpu1 - cpu0) / block)
            pg["baseline, exhausted"].append((cpu2 - cpu1) / block)
        for name, values in pg.items():
            print(f"{name:<22} PostgreSQL µs/statement  {summary(values)}")
        for name, values in python.items():
            print(f"store.claim, {name:<9} Python µs/claim         {summary(values)}")
    finally:
        await baseline.close()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--statements", type=int, default=6000, help="per arm")
    parser.add_argument("--block", type=int, default=250)
    args = parser.parse_args()
    name = database.new_database_name("claim")
    dsn = database.create_database(SERVER_URL, name)
    try:
        asyncio.run(measure(dsn, args.statements, args.block))
    finally:
        database.drop_database(SERVER_URL, name)


if __name__ == "__main__":
    main()
