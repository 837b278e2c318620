"""What the figures ran on, and how busy the machine was with other work meanwhile.

The benchmark shares its cores with whatever else runs. For each measured
run it reads the machine's busy CPU time (``/proc/stat``) and subtracts what
the benchmark's own processes used (the servers, wrk, and the PostgreSQL
backends serving the benchmark's databases); the rest is *other load*, in
cores. PostgreSQL's background processes (WAL writer, checkpointer,
autovacuum) count as other load although the benchmark causes part of it.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.servers import CLOCK_TICKS, Server, pids_cpu_seconds


def machine_info(server_url: str) -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": model,
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": asyncio.run(_pg_version(server_url)),
    }


async def _pg_version(server_url: str) -> str:
    conn = await asyncpg.connect(server_url, timeout=5)
    try:
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("server_version", "shared_buffers", "synchronous_commit")
        }
    finally:
        await conn.close()
    return (
        f"{settings['server_version']} (shared_buffers {settings['shared_buffers']}, "
        f"synchronous_commit {settings['synchronous_commit']})"
    )


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _backend_pids(server_url: str, databases: list[str]) -> list[int]:
    conn = await asyncpg.connect(server_url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1::text[])", databases
        )
    finally:
        await conn.close()
    return [row["pid"] for row in rows]


@dataclass(frozen=True)
class CpuSplit:
    """CPU seconds one run cost, by whom: the system under test's processes, the
    PostgreSQL backends serving the benchmark's databases, and wrk."""

    server: float = 0.0
    backends: float = 0.0
    load_generator: float = 0.0


@dataclass
class CpuMeter:
    """Measures one run: call ``start`` before it and ``stop`` after it."""

    server_url: str
    databases: list[str]
    servers: list[Server]
    split: CpuSplit = CpuSplit()

    def _readings(self, backends: list[int], measured: Server | None) -> tuple[float, ...]:
        servers = [pid for server in self.servers for pid in server.tree()]
        own = pids_cpu_seconds(measured.tree()) if measured is not None else 0.0
        children = _children_cpu_seconds()
        return pids_cpu_seconds(servers) + children, pids_cpu_seconds(backends), own, children

    def start(self, measured: Server | None = None) -> None:
        """``measured``: the server under load, whose own CPU ``split`` reports."""
        self._measured = measured
        self._backends = asyncio.run(_backend_pids(self.server_url, self.databases))
        self._busy = _busy_seconds()
        self._before = self._readings(self._backends, measured)

    def stop(self, wall_seconds: float) -> float:
        """Other load during the run, in cores (0 = the machine was ours alone)."""
        busy = _busy_seconds() - self._busy
        # Backends that connect during the run count as other load; the warm-up fills the pools.
        after = self._readings(self._backends, self._measured)
        servers, backends, own, children = (a - b for a, b in zip(after, self._before, strict=True))
        self.split = CpuSplit(own, backends, children)
        ours = servers + backends
        return max(0.0, (busy - ours) / wall_seconds) if wall_seconds > 0 else 0.0
