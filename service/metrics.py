"""Prometheus metrics that add up across every worker process of a ``serve``.

    action_links_links_minted_total{client, action}
    action_links_redemptions_total{outcome}            success, used, expired, invalid, …
    action_links_webhook_attempts_total{outcome}       delivered, rejected, failed, timeout, …
    action_links_auth_failures_total{credential}       api_key, admin_token, metrics_token,
                                                       link_token, typed_code
    action_links_http_request_duration_seconds{method, route, status}
    action_links_delivery_backlog                      pending webhook deliveries
    action_links_delivery_oldest_pending_age_seconds

Labels only ever hold values from small, fixed sets or from configuration
(client ids and action names exist before a link can be minted): ``route``
is the route *template* (``/r/{token:path}``), never the requested path,
so a token can never become a label value.

Multiprocess mode: prometheus_client decides at import time, from
``PROMETHEUS_MULTIPROC_DIR``, whether values live in process memory or in
files in that directory. ``action-links serve --workers N`` sets it to a
fresh directory before the workers start (``prepare_multiprocess_dir``); an
operator may set it instead (one directory per ``serve``; it is emptied at
start). A scrape, served by any worker, then merges every process's files,
so totals include workers that have since exited.

The delivery gauges are read from the ``deliveries`` table at scrape time
(one short, time-limited query), not kept per process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from service.errors import DatabaseUnavailable
from service.store import Store

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"
BACKLOG_TIMEOUT_SECONDS = 1.0
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


Credential = Literal["api_key", "admin_token", "metrics_token", "link_token", "typed_code"]

LINKS_MINTED = Counter("action_links_links_minted", "Links minted.", ["client", "action"])
REDEMPTIONS = Counter("action_links_redemptions", "Redemption attempts, by outcome.", ["outcome"])
WEBHOOK_ATTEMPTS = Counter(
    "action_links_webhook_attempts", "Webhook delivery attempts, by outcome.", ["outcome"]
)
AUTH_FAILURES = Counter(
    "action_links_auth_failures",
    "Requests refused for a missing or wrong API key, admin or metrics token, an invalid link "
    "token, or a wrong or locked typed code.",
    ["credential"],
)
REQUEST_DURATION = Histogram(
    "action_links_http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by route template.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)


def link_minted(client_id: str, action: str) -> None:
    LINKS_MINTED.labels(client_id, action).inc()


def links_minted(client_id: str, actions: Iterable[str]) -> None:
    for action, count in Tally(actions).items():
        LINKS_MINTED.labels(client_id, action).inc(count)


def redemption(outcome: str) -> None:
    REDEMPTIONS.labels(outcome).inc()


def webhook_attempt(outcome: str) -> None:
    """Once per delivery attempt (inline, sync or background); ``outcome`` is ``Attempt.kind``:
    ``delivered`` 2xx; ``rejected`` 4xx; ``failed`` any other answer (3xx, 5xx,
    garbage); ``timeout``; ``unreachable`` (refused, reset, no webhook_url)."""
    WEBHOOK_ATTEMPTS.labels(outcome).inc()


def auth_failed(credential: Credential) -> None:
    AUTH_FAILURES.labels(credential).inc()


def request_finished(method: str, route: str, status: int, seconds: float) -> None:
    REQUEST_DURATION.labels(method, route, str(status)).observe(seconds)


# --- multiprocess mode ----------------------------------------------------------------


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """Before workers start: an empty metrics directory for them to share.

    Returns a directory this call created (the caller removes it when serving
    ends), or None when the operator chose one (emptied of old ``*.db`` files
    here) or when a single process needs none.
    """
    chosen = os.environ.get(MULTIPROC_ENV)
    if chosen:
        directory = Path(chosen)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return None
    if workers <= 1:
        return None
    created = Path(tempfile.mkdtemp(prefix="action-links-metrics-"))
    os.environ[MULTIPROC_ENV] = str(created)
    return created


def process_exiting() -> None:
    """Bookkeeping for this worker's exit (drops its live-gauge files, if any)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped upstream


# --- scraping ----------------------------------------------------------------------------


class _Backlog(Collector):
    def __init__(self, pending: int, oldest_age: float) -> None:
        self.pending = pending
        self.oldest_age = oldest_age

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "action_links_delivery_backlog",
            "Webhook deliveries waiting to be delivered.",
            value=self.pending,
        )
        yield GaugeMetricFamily(
            "action_links_delivery_oldest_pending_age_seconds",
            "Age of the oldest webhook delivery still pending (0 when none is).",
            value=self.oldest_age,
        )


async def delivery_backlog(store: Store) -> tuple[int, float] | None:
    """(pending deliveries, age of the oldest in seconds), or None if the database did not
    answer in time (or has no schema yet): a scrape never fails on the gauges."""
    try:
        pending, oldest = await store.delivery_backlog(BACKLOG_TIMEOUT_SECONDS)
    except (DatabaseUnavailable, SQLAlchemyError) as exc:
        log.debug("delivery backlog not read: %s", type(exc).__name__)
        return None
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
    return int(pending), max(age, 0.0)


def _exposition(backlog: tuple[int, float] | None) -> bytes:
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if backlog is not None:
        gauges = CollectorRegistry(auto_describe=False)
        gauges.register(_Backlog(*backlog))
        body += generate_latest(gauges)
    return body


async def render(store: Store) -> bytes:
    """The Prometheus text exposition of every metric (files are read off the event loop)."""
    backlog = await delivery_backlog(store)
    return await asyncio.to_thread(_exposition, backlog)
