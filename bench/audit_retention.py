"""Audit-log retention at scale: today's batched purge vs dropping a monthly partition.

The README's scaling plan proposes partitioning ``redemptions`` by month so
that retention becomes ``DETACH PARTITION … CONCURRENTLY`` plus ``DROP
TABLE``. This measures both on the same rows:

1. **batched delete** (what ships): ``--rows`` expired redemptions, spread
   over one month in arrival order, and ``--live`` recent ones are loaded
   into the migrated ``redemptions`` table; ``service.purge.purge`` deletes
   the expired ones in batches, then ``VACUUM`` reclaims their space (the
   delete leaves dead rows behind; the cost is part of the delete).
2. **partition drop** (the proposal): the same rows go into a scratch table
   partitioned by month on ``redeemed_at``, with the same indexes (the
   unique id and the primary key then include ``redeemed_at``, as
   PostgreSQL requires); the expired month is detached and dropped.

Prints one JSON object: load and retention times, WAL written during each
retention (server-wide: whatever else the server does meanwhile counts too),
and the rows left (the live ones must all survive).

    createdb -h 127.0.0.1 -U postgres al_retention_bench
    DATABASE_URL=postgresql://postgres@127.0.0.1/al_retention_bench action-links migrate
    python -m bench.audit_retention \\
        --database-url postgresql://postgres@127.0.0.1/al_retention_bench --rows 10000000

Every expired redemption in the database is purged, not only the loaded
ones: point it at a scratch database.
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

CLIENT = "bench-retention"
RETENTION = timedelta(days=90)
MONTH = timedelta(days=30)
PARTITIONED = "bench_redemptions_by_month"

# Rows in arrival order over one month from $3, as a service records them.
LOAD = """
INSERT INTO {table} (id, client_id, link_id, claim_key, action, subject, data, use, max_uses,
                     redeemed_at)
SELECT $1 || i, $2, $1 || 'link-' || i, 'l:' || $1 || i, 'activate', 'user-' || (i % 100000),
       '{{"plan": "pro"}}'::json, 1, 1,
       $3::timestamptz + (i * {month_seconds} / $4::bigint) * interval '1 second'
FROM generate_series(1, $4::bigint) AS i
"""

# The migrated table's indexes, on a table partitioned by month: the primary
# key and the unique id must include the partition key.
PARTITIONED_DDL = f"""
CREATE TABLE {PARTITIONED} (LIKE redemptions INCLUDING DEFAULTS)
    PARTITION BY RANGE (redeemed_at);
ALTER TABLE {PARTITIONED} ADD PRIMARY KEY (seq, redeemed_at);
ALTER TABLE {PARTITIONED} ADD UNIQUE (id, redeemed_at);
CREATE INDEX ON {PARTITIONED} (client_id, action, seq);
CREATE INDEX ON {PARTITIONED} (client_id, link_id, seq);
CREATE INDEX ON {PARTITIONED} (client_id, seq);
CREATE INDEX ON {PARTITIONED} (client_id, subject, seq);
"""


def _load(table: str) -> str:
    return LOAD.format(table=table, month_seconds=int(MONTH.total_seconds()))


async def _wal_bytes(conn: asyncpg.Connection, since: str) -> int:
    written = await conn.fetchval(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", since
    )
    return int(written)


async def _timed_load(
    conn: asyncpg.Connection, table: str, rows: int, live: int, now: datetime
) -> float:
    expired_from = now - RETENTION - MONTH - timedelta(days=1)
    started = time.perf_counter()
    await conn.execute(_load(table), "e", CLIENT, expired_from, rows)
    await conn.execute(_load(table), "v", CLIENT, now - MONTH, live)
    await conn.execute(f"ANALYZE {table}")
    return round(time.perf_counter() - started, 2)


async def batched_delete(
    dsn: str, settings: Settings, args: argparse.Namespace
) -> dict[str, object]:
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM redemptions WHERE client_id = $1", CLIENT)  # a failed run's
        loaded = await _timed_load(conn, "redemptions", args.rows, args.live, now)
        size_before = await conn.fetchval("SELECT pg_total_relation_size('redemptions')")
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        store = open_store(settings)
        try:
            started = time.perf_counter()
            report = await purge(store, now, RETENTION, args.batch_size)
            purged = time.perf_counter() - started
        finally:
            await store.close()
        wal = await _wal_bytes(conn, lsn)
        started = time.perf_counter()
        await conn.execute("VACUUM redemptions")
        vacuumed = time.perf_counter() - started
        left = await conn.fetchval("SELECT count(*) FROM redemptions WHERE client_id = $1", CLIENT)
        await conn.execute("DELETE FROM redemptions WHERE client_id = $1", CLIENT)
    finally:
        await conn.close()
    return {
        "load_seconds": loaded,
        "table_bytes": size_before,
        "purge_seconds": round(purged, 2),
        "vacuum_seconds": round(vacuumed, 2),
        "wal_bytes": wal,
        "deleted": report.redemptions,
        "batches": report.batches,
        "longest_batch_seconds": report.longest_batch_seconds,
        "left": left,
    }


async def partition_drop(dsn: str, args: argparse.Namespace) -> dict[str, object]:
    now = datetime.now(UTC)
    expired_from = now - RETENTION - MONTH - timedelta(days=1)
    bounds = {
        "expired": (expired_from, expired_from + MONTH + timedelta(seconds=1)),
        "live": (now - MONTH, now + timedelta(days=1)),
    }
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {PARTITIONED}")
        await conn.execute(PARTITIONED_DDL)
        for name, (start, end) in bounds.items():
            await conn.execute(
                f"CREATE TABLE {PARTITIONED}_{name} PARTITION OF {PARTITIONED}"
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        loaded = await _timed_load(conn, PARTITIONED, args.rows, args.live, now)
        expired = f"{PARTITIONED}_expired"
        size_before = await conn.fetchval(f"SELECT pg_total_relation_size('{expired}')")
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        started = time.perf_counter()
        await conn.execute(f"ALTER TABLE {PARTITIONED} DETACH PARTITION {expired} CONCURRENTLY")
        detached = time.perf_counter() - started
        await conn.execute(f"DROP TABLE {expired}")
        dropped = time.perf_counter() - started
        wal = await _wal_bytes(conn, lsn)
        left = await conn.fetchval(f"SELECT count(*) FROM {PARTITIONED}")
        await conn.execute(f"DROP TABLE {PARTITIONED}")
    finally:
        await conn.close()
    return {
        "load_seconds": loaded,
        "partition_bytes": size_before,
        "detach_seconds": round(detached, 3),
        "detach_and_drop_seconds": round(dropped, 3),
        "wal_bytes": wal,
        "left": left,
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    settings = Settings(database_url=args.database_url)
    dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    return {
        "rows": args.rows,
        "live": args.live,
        "batch_size": args.batch_size,
        "batched_delete": await batched_delete(dsn, settings, args),
        "partition_drop": await partition_drop(dsn, args),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a migrated PostgreSQL database")
    parser.add_argument("--rows", type=int, default=1_000_000, help="expired redemptions to load")
    parser.add_argument("--live", type=int, default=100_000, help="recent redemptions to keep")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
