"""What PostgreSQL did per request in one measured run, statement by statement.

With ``--pg-statements`` each measured run also reads ``pg_stat_statements``
(when the server loads it: ``shared_preload_libraries``) before and after,
for the benchmark's databases, and prints the busiest statements of the run
per call: executions, execution time, shared buffers hit and read, WAL
records and full-page images. Buffers hit per call do not depend on the
machine's load, so they show a table or an index that grew (bloat, dead
rows) where the CPU figures only show that something costs more.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

COUNTERS = (
    "calls",
    "total_exec_time",
    "shared_blks_hit",
    "shared_blks_read",
    "shared_blks_dirtied",
    "wal_records",
    "wal_fpi",
    "wal_bytes",
)
SNAPSHOT = f"""
SELECT s.queryid, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 70) AS query,
       {", ".join(f"s.{c}::float8 AS {c}" for c in COUNTERS)}
FROM pg_stat_statements AS s JOIN pg_database AS d ON d.oid = s.dbid
WHERE d.datname = ANY($1::text[])
"""


@dataclass(frozen=True)
class StatementDelta:
    query: str
    counters: dict[str, float]

    def per_call(self, name: str) -> float:
        calls = self.counters["calls"]
        return self.counters[name] / calls if calls else 0.0


async def _snapshot(server_url: str, databases: list[str]) -> dict[int, tuple[str, list[float]]]:
    conn = await asyncpg.connect(server_url, timeout=5)
    try:
        # The extension may be installed in the database but not loaded by the server
        # (preloading was turned off since): then its view refuses to be read.
        if "pg_stat_statements" not in await conn.fetchval("SHOW shared_preload_libraries"):
            return {}
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        rows = await conn.fetch(SNAPSHOT, databases)
    finally:
        await conn.close()
    return {row["queryid"]: (row["query"], [row[c] for c in COUNTERS]) for row in rows}


class StatementMeter:
    """``start`` before a run, ``stop`` after it: the statements' deltas, busiest first."""

    def __init__(self, server_url: str, databases: list[str]) -> None:
        self.server_url = server_url
        self.databases = databases
        self._before: dict[int, tuple[str, list[float]]] = {}

    def start(self) -> None:
        self._before = asyncio.run(_snapshot(self.server_url, self.databases))

    def stop(self) -> list[StatementDelta]:
        after = asyncio.run(_snapshot(self.server_url, self.databases))
        deltas = []
        for queryid, (query, values) in after.items():
            before = self._before.get(queryid, (query, [0.0] * len(COUNTERS)))[1]
            counters = {c: a - b for c, a, b in zip(COUNTERS, values, before, strict=True)}
            if counters["calls"] > 0:
                deltas.append(StatementDelta(query, counters))
        deltas.sort(key=lambda d: d.counters["total_exec_time"], reverse=True)
        return deltas


def report(deltas: list[StatementDelta], requests: int, top: int = 5) -> str:
    lines = []
    for d in deltas[:top]:
        lines.append(
            f"bench:     {d.counters['calls'] / max(requests, 1):5.2f} calls/req"
            f"  {d.per_call('total_exec_time') * 1000:7.1f} µs/call"
            f"  hit {d.per_call('shared_blks_hit'):6.1f}"
            f"  read {d.per_call('shared_blks_read'):4.1f}"
            f"  dirtied {d.per_call('shared_blks_dirtied'):4.2f}"
            f"  WAL {d.per_call('wal_records'):4.1f} rec {d.per_call('wal_fpi'):4.2f} fpi"
            f" {d.per_call('wal_bytes'):7.0f} B  {d.query}"
        )
    return "\n".join(lines)
