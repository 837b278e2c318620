"""What each worker reports about itself: its database pool and, with several workers, its process.

A single process keeps its metrics in memory, and prometheus_client's own
collector reports its CPU, memory and file descriptors at scrape time. With
several workers (multiprocess mode) that collector is lost: a scrape is
answered by one worker and sees the others only through their files. So each
worker writes its own figures there, under the usual names with a ``pid``
label, when it starts and every ``SAMPLE_SECONDS`` (and whichever answers a
scrape, just before): ``process_resident_memory_bytes``,
``process_virtual_memory_bytes``, ``process_open_fds``, ``process_max_fds``,
``process_start_time_seconds`` (those of live workers only) and
``process_cpu_seconds_total`` (a counter: an exited worker's stays, so the sum
over ``pid`` is the CPU of the whole ``serve``).

The pool gauges (``action_links_db_pool_size``, ``…_in_use``) are sampled the
same way, in every mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from prometheus_client import Counter, Gauge
from prometheus_client.process_collector import PROCESS_COLLECTOR

from service import metrics
from service.store import Store

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0

# Not in the default registry (whose collector has these names): in multiprocess
# mode their values go to this worker's files, which every scrape merges.
_GAUGES = {
    name: Gauge(name, help_text, multiprocess_mode="liveall", registry=None)
    for name, help_text in (
        ("process_resident_memory_bytes", "Resident memory size in bytes."),
        ("process_virtual_memory_bytes", "Virtual memory size in bytes."),
        ("process_open_fds", "Number of open file descriptors."),
        ("process_max_fds", "Maximum number of open file descriptors."),
        ("process_start_time_seconds", "Start time of the process since unix epoch in seconds."),
    )
}
_CPU = Counter(
    "process_cpu_seconds",
    "Total user and system CPU time spent in seconds.",
    ["pid"],
    registry=None,
)
_cpu_reported = [0.0]  # what this process has added to its CPU counter so far


def sample_process() -> None:
    """Write this worker's process figures to its files (multiprocess mode only)."""
    if not metrics.multiprocess_mode():
        return
    figures = {
        sample.name: sample.value
        for family in PROCESS_COLLECTOR.collect()
        for sample in family.samples
    }
    # Counter and gauges live in two files, which a scrape in another worker reads in
    # directory order while they are written: during this worker's first sample it may
    # see one and not yet the other. Every scrape after the first sample sees both.
    cpu = figures.get("process_cpu_seconds_total", 0.0)
    if cpu > _cpu_reported[0]:
        _CPU.labels(str(os.getpid())).inc(cpu - _cpu_reported[0])
        _cpu_reported[0] = cpu
    for name, gauge in _GAUGES.items():
        if name in figures:
            gauge.set(figures[name])


def sample(store: Store) -> None:
    """This process's pool and process figures, now."""
    metrics.sample_pool(store)
    sample_process()


class PeriodicSampling:
    """``sample`` now and every ``interval`` seconds, until stopped (owned by the lifespan)."""

    def __init__(self, store: Store, interval: float = SAMPLE_SECONDS) -> None:
        self.store = store
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> PeriodicSampling:
        sample(self.store)
        self._task = asyncio.create_task(self._run(), name="metrics-sampling")
        return self

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                sample(self.store)
            except Exception:
                log.exception("metrics sampling failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
