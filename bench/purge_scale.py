"""Purge at scale: load many expired use counters, purge them, show it works in bounded batches.

Loads ``--rows`` expired per-link counters (``generate_series``, one
statement), plus ``--live`` counters of links still valid and as many
once-key budgets, into a migrated PostgreSQL database, runs
``service.purge.purge`` and prints one JSON object: the purge report (rows
deleted, batches, largest batch, longest batch in seconds), the wall time,
and what is left, checked with SQL.

    createdb -h 127.0.0.1 -U postgres al_purge_bench
    DATABASE_URL=postgresql://postgres@127.0.0.1/al_purge_bench action-links migrate
    python bench/purge_scale.py --database-url postgresql://postgres@127.0.0.1/al_purge_bench

Every expired counter in the database is purged, not only the loaded ones:
point it at a scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from service.config import Settings
from service.db import open_store
from service.purge import BATCH_SIZE, purge

CLIENT = "bench-purge"

LOAD = """
INSERT INTO claims (client_id, key, uses, max_uses, expires_at, first_used_at, last_used_at)
SELECT $1, $2 || i, 1, 1, $3::timestamptz - i * interval '1 millisecond',
       $3::timestamptz - interval '1 day', $3::timestamptz - interval '1 day'
FROM generate_series(1, $4::bigint) AS i
"""


async def load(dsn: str, expired: int, live: int, now: datetime) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(LOAD, CLIENT, "l:expired-", now - timedelta(hours=1), expired)
        await conn.execute(LOAD, CLIENT, "l:live-", now + timedelta(days=30), live)
        await conn.execute(
            "INSERT INTO claims (client_id, key, uses, max_uses, expires_at, first_used_at,"
            " last_used_at) SELECT $1, 'o:budget-' || i, 1, 1, NULL, $2, $2"
            " FROM generate_series(1, $3::bigint) AS i",
            CLIENT,
            now - timedelta(days=400),
            live,
        )
        await conn.execute("ANALYZE claims")
    finally:
        await conn.close()


async def remaining(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE key LIKE 'l:expired-%') AS expired,"
            " count(*) FILTER (WHERE key LIKE 'l:live-%') AS live,"
            " count(*) FILTER (WHERE key LIKE 'o:budget-%') AS budgets"
            " FROM claims WHERE client_id = $1",
            CLIENT,
        )
        await conn.execute("DELETE FROM claims WHERE client_id = $1", CLIENT)
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def main(args: argparse.Namespace) -> dict[str, object]:
    settings = Settings(database_url=args.database_url)
    dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    now = datetime.now(UTC)
    started = time.perf_counter()
    await load(dsn, args.rows, args.live, now)
    loaded = time.perf_counter() - started
    store = open_store(settings)
    try:
        started = time.perf_counter()
        report = await purge(store, now, timedelta(days=90), args.batch_size)
        purged = time.perf_counter() - started
    finally:
        await store.close()
    return {
        "rows": args.rows,
        "batch_size": args.batch_size,
        "load_seconds": round(loaded, 2),
        "purge_seconds": round(purged, 2),
        "report": report.summary(),
        "batch_sizes": sorted(set(report.batch_sizes)),
        "left": await remaining(dsn),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a migrated PostgreSQL database")
    parser.add_argument("--rows", type=int, default=1_000_000, help="expired counters to load")
    parser.add_argument("--live", type=int, default=10_000, help="live counters and budgets")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
