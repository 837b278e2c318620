"""WAL and PostgreSQL CPU of first uses under concurrency: the store's claim against the baseline's.

``python -m bench.claim_wal [--claims N] [--connections C] [--history R] [--checkpoint]``
creates a fresh database (``R`` rows of audit history and of the baseline's
table loaded first, so the indexes have the depth of a used service), then
claims ``N`` never-used single-use links through the PostgreSQL store on ``C``
connections at once, and inserts ``N`` new rows into the baseline's table on
``C`` connections of its own. For each arm it reports, per statement:

- the backends' CPU (``/proc/<pid>/schedstat``, on-CPU time only);
- the WAL the arm wrote, read back with ``pg_waldump`` over the arm's LSN range
  and kept to this database's records and to the commits of transactions that
  wrote them (other databases on the same server are left out): records,
  bytes, full-page images, and the bytes per relation;
- the wait events its backends were seen in (``pg_stat_activity`` sampled
  every 5 ms).

``--checkpoint`` runs a ``CHECKPOINT`` before each arm, so each pays the
full-page images a run after a checkpoint pays (the default has none, unless
the server's own checkpoint falls inside an arm). WAL is load-independent;
the CPU figures need the machine lock. Needs to read the server's ``pg_wal``
(run as the postgres user or root, on the server's machine).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import database
from bench.claim_cpu import BASELINE_INSERT, backend_cpu_us, new_link
from bench.database import SERVER_URL
from service.config import Settings
from service.store.postgres import PostgresStore, create_engine

_RECORD = re.compile(
    r"rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s*(?P<rec>\d+)/\s*(?P<tot>\d+), tx:\s*(?P<xid>\d+),"
    r".*?desc: (?P<desc>\S+)(?P<rest>.*)"
)
_BLOCK = re.compile(r"rel (\d+)/(\d+)/(\d+) (?:fork \w+ )?blk \d+( FPW)?")


@dataclass
class Wal:
    records: int = 0
    bytes: int = 0
    images: int = 0
    image_bytes: int = 0
    by_relation: collections.Counter[str] = field(default_factory=collections.Counter)
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)


def waldump(major: int) -> str:
    """The server's own ``pg_waldump`` (Debian keeps it out of ``PATH``), else ``PATH``'s."""
    packaged = Path(f"/usr/lib/postgresql/{major}/bin/pg_waldump")
    return str(packaged) if packaged.exists() else "pg_waldump"


def read_wal(
    tool: str, data_directory: str, start: str, end: str, database_oid: int, names: dict[int, str]
) -> Wal:
    """This database's WAL between ``start`` and ``end``, with its transactions' commits."""
    completed = subprocess.run(
        [tool, "-p", f"{data_directory}/pg_wal", "-s", start, "-e", end],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0 and "end of WAL" not in completed.stderr:
        raise RuntimeError(f"pg_waldump: {completed.stderr.strip()}")
    output = completed.stdout
    ours: set[str] = set()
    commits: list[tuple[str, int]] = []
    wal = Wal()
    for line in output.splitlines():
        match = _RECORD.search(line)
        if match is None:
            continue
        blocks = _BLOCK.findall(match["rest"])
        total = int(match["tot"])
        if not blocks:
            if match["rmgr"] == "Transaction" and match["desc"] == "COMMIT":
                commits.append((match["xid"], total))
            continue
        if not any(int(db) == database_oid for _, db, _, _ in blocks):
            continue
        ours.add(match["xid"])
        wal.records += 1
        wal.bytes += total
        images = sum(1 for *_, image in blocks if image)
        wal.images += images
        if images:
            wal.image_bytes += total - int(match["rec"])
        relation = names.get(int(blocks[0][2]), blocks[0][2])
        wal.by_relation[relation] += total
        wal.by_kind[f"{match['rmgr']}/{match['desc']}"] += 1
    for xid, total in commits:
        if xid in ours:
            wal.records += 1
            wal.bytes += total
            wal.by_kind["Transaction/COMMIT"] += 1
    return wal


@dataclass
class ArmFigures:
    label: str
    statements: int
    cpu_us: float
    wal: Wal
    waits: collections.Counter[str]

    def report(self) -> None:
        n = self.statements
        wal = self.wal
        print(
            f"{self.label}: {self.cpu_us / n:6.1f} µs PostgreSQL CPU, "
            f"{wal.records / n:5.2f} WAL records, {wal.bytes / n:7.1f} WAL bytes "
            f"({wal.images / n:5.3f} full-page images, {wal.image_bytes / n:6.1f} bytes)"
        )
        relations = ", ".join(f"{k} {v / n:.0f}" for k, v in wal.by_relation.most_common())
        print(f"    WAL bytes by relation: {relations}")
        kinds = ", ".join(f"{k} {v / n:.2f}" for k, v in wal.by_kind.most_common())
        print(f"    records by kind: {kinds}")
        seen = sum(self.waits.values()) or 1
        waits = ", ".join(f"{k} {100 * v / seen:.0f}%" for k, v in self.waits.most_common(8))
        print(f"    backends seen: {waits}")


async def sample_waits(
    server: Any, database_name: str, pids: list[int], stop: asyncio.Event
) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    while not stop.is_set():
        rows = await server.fetch(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = $1 AND pid = ANY($2::int[])",
            database_name,
            pids,
        )
        for row in rows:
            if row["state"] != "active":
                seen["idle"] += 1
            elif row["wait_event"] is None:
                seen["running"] += 1
            else:
                seen[f"{row['wait_event_type']}:{row['wait_event']}"] += 1
        await asyncio.sleep(0.005)
    return seen


async def measure(
    dsn: str, name: str, claims: int, connections: int, checkpoint: bool, perf: Path | None
) -> None:
    plain_dsn = dsn.replace("postgresql+asyncpg://", "postgresql://")
    server: Any = await asyncpg.connect(SERVER_URL)
    settings = Settings(database_url=dsn, secret_keys="x" * 48, database_pool_size=connections + 2)
    store = PostgresStore(create_engine(settings))
    baseline: list[Any] = [await asyncpg.connect(plain_dsn) for _ in range(connections)]
    try:
        oid = int(await server.fetchval("SELECT oid FROM pg_database WHERE datname = $1", name))
        data_directory = str(await server.fetchval("SHOW data_directory"))
        major = int(str(await server.fetchval("SHOW server_version_num"))) // 10000
        local: Any = await asyncpg.connect(plain_dsn)
        names = {
            int(r["relfilenode"]): r["relname"]
            for r in await local.fetch("SELECT relname, relfilenode FROM pg_class")
        }
        await local.close()
        now = datetime.now(UTC)
        # Warm every connection the store will use (and its prepared statement).
        warm = [new_link(now) for _ in range(connections)]
        await asyncio.gather(*(store.claim(link, now, deliver=False, lease=None) for link in warm))
        store_pids: list[int] = []

        async def pid_of_store() -> None:
            async with store.driver() as driver:
                store_pids.append(int(await driver.fetchval("SELECT pg_backend_pid()")))
                await asyncio.sleep(0.05)

        await asyncio.gather(*(pid_of_store() for _ in range(connections)))
        for connection in baseline:
            await connection.fetchrow(BASELINE_INSERT, secrets.token_urlsafe(12), "go", "user-1")
        baseline_pids = [c.get_server_pid() for c in baseline]

        async def store_arm() -> None:
            links = [new_link(now) for _ in range(claims)]

            async def worker(mine: list[Any]) -> None:
                for link in mine:
                    assert (await store.claim(link, now, deliver=False, lease=None)).claimed

            await asyncio.gather(*(worker(links[i::connections]) for i in range(connections)))

        async def baseline_arm() -> None:
            ids = [secrets.token_urlsafe(12) for _ in range(claims)]

            async def worker(connection: Any, mine: list[str]) -> None:
                for link_id in mine:
                    await connection.fetchrow(BASELINE_INSERT, link_id, "go", "user-12345")

            await asyncio.gather(*(worker(c, ids[i::connections]) for i, c in enumerate(baseline)))

        for label, arm, pids in (
            ("claim, first use", store_arm, store_pids),
            ("baseline insert ", baseline_arm, baseline_pids),
        ):
            if checkpoint:
                await server.execute("CHECKPOINT")
            start = str(await server.fetchval("SELECT pg_current_wal_insert_lsn()::text"))
            cpu0 = sum(backend_cpu_us(pid) for pid in pids)
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_waits(server, name, pids, stop))
            recorder = None
            if perf is not None:
                out = perf / f"{label.split(',')[0].strip()}.data"
                recorder = subprocess.Popen(  # noqa: ASYNC220 - started and left running
                    ["perf", "record", "-q", "-g", "-o", str(out), "-p", ",".join(map(str, pids))]
                )
                await asyncio.sleep(0.5)
            began = time.perf_counter()
            await arm()
            elapsed = time.perf_counter() - began
            stop.set()
            waits = await sampler
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)
                recorder.wait()
            cpu = sum(backend_cpu_us(pid) for pid in pids) - cpu0
            end = str(await server.fetchval("SELECT pg_current_wal_flush_lsn()::text"))
            wal = read_wal(waldump(major), data_directory, start, end, oid, names)
            ArmFigures(label, claims, cpu, wal, waits).report()
            print(f"    {claims / elapsed:,.0f} statements/s")
    finally:
        for connection in baseline:
            await connection.close()
        await store.close()
        await server.close()


async def load_history(dsn: str, rows: int) -> None:
    connection: Any = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(database.LOAD_REDEMPTIONS, rows)
        await connection.execute(database.LOAD_BASELINE, rows)
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--claims", type=int, default=4000, help="per arm")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--history", type=int, default=200_000, help="rows loaded first")
    parser.add_argument("--checkpoint", action="store_true", help="CHECKPOINT before each arm")
    parser.add_argument("--prepare", default="", help="SQL run on the database first (a trial)")
    parser.add_argument("--perf", type=Path, help="perf record -g each arm's backends into DIR")
    args = parser.parse_args()
    name = database.new_database_name("wal")
    dsn = database.create_database(SERVER_URL, name)
    try:
        if args.prepare:
            plain_dsn = dsn.replace("postgresql+asyncpg://", "postgresql://")
            asyncio.run(database.execute(plain_dsn, args.prepare))
        if args.history:
            asyncio.run(load_history(dsn, args.history))
        asyncio.run(measure(dsn, name, args.claims, args.connections, args.checkpoint, args.perf))
    finally:
        database.drop_database(SERVER_URL, name)


if __name__ == "__main__":
    main()
