"""PostgreSQL for the benchmark: start it, make fresh databases, load history.

Every run works in databases of its own (``al_bench_<pid>_<random>``), dropped
at the end. History for the growth scenario is written with
``generate_series`` straight into the tables, never through the API: rows
are inserted in key order with the secondary indexes dropped, then the
indexes are rebuilt and the tables vacuumed and analysed, which is what a
long-running, autovacuumed database looks like, in minutes instead of hours.

Loading 10 million rows still takes minutes, so the loaded database can be
kept as a template (``al_bench_history_<rows>_<schema hash>``) and copied for
the next run; the hash covers the migrations, so a schema change rebuilds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from bench.baseline import SCHEMA as BASELINE_SCHEMA

REPO_ROOT = Path(__file__).resolve().parents[1]
# The PostgreSQL server the benchmark makes its databases on (any database of it).
SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
LOADER_VERSION = "1"  # bump when the generated rows change

# Rows of history, in key order. ``$1`` is the number of rows. The ids are
# URL-safe base64 like real link ids, so new keys land all over the index.
_ID = "translate(substr(encode(decode(md5({seed}), 'hex'), 'base64'), 1, 16), '+/', '-_')"
LOAD_CLAIMS = f"""
INSERT INTO claims (client_id, key, uses, max_uses, expires_at, first_used_at, last_used_at)
SELECT 'bench', 'l:' || link_id, 1, 1, now() + (i % 2592000) * interval '1 second',
       now() - interval '1 day', now() - interval '1 day'
FROM (SELECT i, {_ID.format(seed="i::text")} AS link_id
      FROM generate_series(1, $1::bigint) AS i ORDER BY 2) AS history
"""
LOAD_REDEMPTIONS = f"""
INSERT INTO redemptions
    (id, client_id, link_id, claim_key, action, subject, data, use, max_uses, redeemed_at)
SELECT redemption_id, 'bench', link_id, 'l:' || link_id, 'go', 'user-' || (i % 100000),
       NULL, 1, 1, now() - (i % 7776000) * interval '1 second'
FROM (SELECT i, {_ID.format(seed="'r' || i")} AS redemption_id,
             {_ID.format(seed="i::text")} AS link_id
      FROM generate_series(1, $1::bigint) AS i ORDER BY 2) AS history
"""
LOAD_BASELINE = f"""
INSERT INTO baseline_redemptions (link_id, action, subject, redeemed_at)
SELECT link_id, 'go', 'user-' || (i % 100000), now() - (i % 7776000) * interval '1 second'
FROM (SELECT i, {_ID.format(seed="i::text")} AS link_id
      FROM generate_series(1, $1::bigint) AS i ORDER BY 2) AS history
"""
HISTORY_TABLES = ("claims", "redemptions", "baseline_redemptions")
CHECKPOINT_ROWS = 100_000
SECONDARY_INDEXES = """
SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relname = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)
"""


def log(message: str) -> None:
    print(f"bench [{time.strftime('%H:%M:%S')}]: {message}", file=sys.stderr, flush=True)


def ensure_postgres(server_url: str) -> None:
    """Start the local cluster the way .ci/run does, when nothing answers."""
    if _ready(server_url):
        return
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".")])
    log(f"starting PostgreSQL {versions[-1]}")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False
    )
    for _ in range(60):
        if _ready(server_url):
            return
        time.sleep(1)
    raise RuntimeError(f"PostgreSQL does not answer at {server_url}")


def _ready(server_url: str) -> bool:
    try:
        asyncio.run(execute(server_url, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


async def execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetchval(dsn: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def dsn_for(server_url: str, database: str) -> str:
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{database}"


def new_database_name(label: str) -> str:
    return f"al_bench_{os.getpid()}_{secrets.token_hex(3)}_{label}"


def create_database(
    server_url: str, name: str, template: str | None = None, big: bool = False
) -> str:
    """An empty, migrated database with the baseline's table too, or a copy of ``template``.

    Small copies go through the WAL; ``big`` ones are copied file by file (one
    checkpoint instead of gigabytes of WAL).
    """
    if template is not None:
        strategy = "FILE_COPY" if big else "WAL_LOG"
        asyncio.run(
            execute(
                server_url,
                f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY {strategy}',
            )
        )
        return dsn_for(server_url, name)
    asyncio.run(execute(server_url, f'CREATE DATABASE "{name}"'))
    dsn = dsn_for(server_url, name)
    env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-m", "service", "migrate"], env=env, check=True)
    asyncio.run(execute(dsn, BASELINE_SCHEMA))
    return dsn


def settle(server_url: str, databases: list[str]) -> None:
    """Before every measured run: ``analyze`` the databases, then a ``CHECKPOINT``.

    After a checkpoint, the first change to each page writes the whole page to
    the WAL. Without one of its own, whichever arm the server's timed checkpoint
    (every ``checkpoint_timeout``) happened to fall in paid those images alone:
    write-heavy arms of one run differed by up to a third for it. With it, every
    measured run starts at the same point of the checkpoint cycle, and pays the
    images a production server pays once per cycle for the pages it touches.
    """
    analyze(server_url, databases)
    asyncio.run(execute(server_url, "CHECKPOINT"))


def analyze(server_url: str, databases: list[str]) -> None:
    """``ANALYZE`` each of ``databases``, as autovacuum would have by now (bench/README.md).

    Without statistics the planner sizes a table by its pages alone, and a
    prepared statement keeps the generic plan it made when the table was a
    few hundred rows old; ``ANALYZE`` invalidates those plans, so every
    connection plans again from statistics of the table as it is.
    """
    for name in databases:
        asyncio.run(execute(dsn_for(server_url, name), "ANALYZE"))


def drop_database(server_url: str, name: str) -> None:
    asyncio.run(execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def drop_databases(server_url: str, names: list[str]) -> None:
    """``drop_database`` for each of ``names``, all at once (one connection each)."""

    async def drop_all() -> None:
        drops = (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names)
        await asyncio.gather(*(execute(server_url, drop) for drop in drops))

    asyncio.run(drop_all())


def database_exists(server_url: str, name: str) -> bool:
    found = asyncio.run(fetchval(server_url, "SELECT 1 FROM pg_database WHERE datname = $1", name))
    return found is not None


def truncate_history(dsn: str) -> None:
    """Empty the tables redemption writes, so 'empty' means empty."""
    asyncio.run(
        execute(
            dsn,
            "TRUNCATE deliveries, redemptions, claims, baseline_redemptions",
            *(f"VACUUM (ANALYZE) {table}" for table in HISTORY_TABLES),
        )
    )


def schema_fingerprint() -> str:
    digest = hashlib.sha256(LOADER_VERSION.encode())
    digest.update(BASELINE_SCHEMA.encode())
    for path in sorted((REPO_ROOT / "alembic" / "versions").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def history_template_name(rows: int) -> str:
    return f"al_bench_history_{rows}_{schema_fingerprint()}"


async def _load_history(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn, timeout=5, command_timeout=None)
    try:
        await conn.execute("SET work_mem = '512MB'")
        await conn.execute("SET maintenance_work_mem = '1GB'")
        indexes = await conn.fetch(SECONDARY_INDEXES, list(HISTORY_TABLES))
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["name"]}"')
        for table, statement in (
            ("claims", LOAD_CLAIMS),
            ("redemptions", LOAD_REDEMPTIONS),
            ("baseline_redemptions", LOAD_BASELINE),
        ):
            started = time.monotonic()
            await conn.execute(statement, rows)
            log(f"  {rows:,} rows into {table} in {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        for index in indexes:
            await conn.execute(index["definition"])
        log(f"  {len(indexes)} indexes rebuilt in {time.monotonic() - started:.0f} s")
        for table in HISTORY_TABLES:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        if rows >= CHECKPOINT_ROWS:
            # Write the loaded pages out now rather than during a measured run.
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def create_history_database(
    server_url: str, name: str, rows: int, keep_template: bool, schema: str
) -> str:
    """A fresh database holding ``rows`` rows in claims and redemptions (and the baseline's).

    ``schema`` is an empty migrated database to start from.
    """
    template = history_template_name(rows)
    if keep_template and database_exists(server_url, template):
        log(f"copying the history database {template}")
        return create_database(server_url, name, template=template, big=True)
    log(f"loading {rows:,} rows of history (generate_series; takes a while)")
    started = time.monotonic()
    dsn = create_database(server_url, name, template=schema)
    asyncio.run(_load_history(dsn, rows))
    log(f"history loaded in {time.monotonic() - started:.0f} s")
    if not keep_template:
        return dsn
    # Renamed only once complete, so an interrupted load never becomes the template.
    drop_database(server_url, template)
    asyncio.run(execute(server_url, f'ALTER DATABASE "{name}" RENAME TO "{template}"'))
    return create_database(server_url, name, template=template, big=True)
