"""Prometheus metrics that add up across every worker process of a ``serve``.

    action_links_links_minted_total{client, action}
    action_links_redemptions_total{outcome}            success, used, expired, invalid, …
    action_links_webhook_attempts_total{outcome}       delivered, rejected, failed, timeout, …
    action_links_webhook_attempt_duration_seconds{outcome}
    action_links_deliveries_failed_total               deliveries that used up their retries
    action_links_auth_failures_total{credential}       api_key, admin_token, metrics_token,
                                                       link_token, typed_code
    action_links_rate_limited_total{limit}             auth, link, mint: answered 429
    action_links_http_request_duration_seconds{method, route, status}
    action_links_db_pool_size, action_links_db_pool_in_use
    action_links_db_pool_wait_seconds                  waits for a pooled connection
    action_links_delivery_backlog                      pending webhook deliveries
    action_links_delivery_oldest_pending_age_seconds
    action_links_build_info{version, revision}

Labels only ever hold values from small, fixed sets or from configuration
(client ids and action names exist before a link can be minted): ``route``
is the route *template* (``/r/{token:path}``), never the requested path,
so a token can never become a label value.

Every family is in the first scrape, and every label value known in advance
at 0 (``initialize``, run by each worker as it starts: the outcomes, the
credentials, each client's actions, the 503 of each route that documents
one), so that ``rate()`` sees a counter go from 0 rather than appear at its
first count. The request histogram's other children appear with their first
request (pre-creating every documented answer of every route would be ~2,400
series of zeros). No ``_created`` series (they doubled the count of series).

Multiprocess mode: prometheus_client decides at import time, from
``PROMETHEUS_MULTIPROC_DIR``, whether values live in process memory or in
files in that directory. ``action-links serve --workers N`` sets it to a
fresh directory before the workers start (``prepare_multiprocess_dir``); an
operator may set it instead (one directory per ``serve``; it is emptied at
start). A scrape, served by any worker, then merges every process's files,
so totals include workers that have since exited. The pool gauges are the
sum over the live workers; each worker's process metrics carry its ``pid``
(``service.process_metrics``).

The delivery gauges are read from the ``deliveries`` table at scrape time
(one short, time-limited query), not kept per process; the build info is
written by whichever process answers.
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
from typing import Any, Literal, get_args

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from service import __version__
from service.errors import DatabaseUnavailable
from service.store import Store

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BACKLOG_TIMEOUT_SECONDS = 1.0
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Up to WEBHOOK_TIMEOUT's ceiling (60 s), finer near its default (5 s): an alert on p95 > 4 s.
WEBHOOK_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
)
# Up to the pool's timeout (5 s, then 503), and twice that (the line, then the pool).
POOL_WAIT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
REVISION_ENV = "ACTION_LINKS_REVISION"

# Before any metric is created: a _created series per counter and histogram child
# doubled the series a scrape returns, and nothing reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


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
RATE_LIMITED = Counter(
    "action_links_rate_limited",
    "Requests answered 429 by an abuse limit, by limit.",
    ["limit"],
)
REQUEST_DURATION = Histogram(
    "action_links_http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by route template.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_DURATION = Histogram(
    "action_links_webhook_attempt_duration_seconds",
    "Time one webhook delivery attempt took, by outcome.",
    ["outcome"],
    buckets=WEBHOOK_BUCKETS,
)
DELIVERIES_FAILED = Counter(
    "action_links_deliveries_failed",
    "Webhook deliveries that used up their retry schedule and ended failed.",
)
POOL_SIZE = Gauge(
    "action_links_db_pool_size",
    "Database connections the pools may hold (summed over the live worker processes).",
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "action_links_db_pool_in_use",
    "Database connections checked out of the pools (summed over the live worker processes).",
    multiprocess_mode="livesum",
)
POOL_WAIT = Histogram(
    "action_links_db_pool_wait_seconds",
    "Time from asking for a pooled database connection to having it (or giving up).",
    buckets=POOL_WAIT_BUCKETS,
)
FAMILIES = (
    LINKS_MINTED,
    REDEMPTIONS,
    WEBHOOK_ATTEMPTS,
    AUTH_FAILURES,
    REQUEST_DURATION,
    WEBHOOK_DURATION,
    DELIVERIES_FAILED,
    POOL_SIZE,
    POOL_IN_USE,
    POOL_WAIT,
)


def initialize(
    redemption_outcomes: Iterable[str],
    attempt_outcomes: Iterable[str],
    actions: Iterable[tuple[str, str]],
    unavailable_routes: Iterable[tuple[str, str]],
) -> None:
    """Every label value known in advance, at 0, in this process (each worker calls it).

    ``unavailable_routes``: (method, route) of every route that documents a 503, whose
    503 count then starts at 0 (the share of 503s is what alerts watch)."""
    for method, route in unavailable_routes:
        REQUEST_DURATION.labels(method, route, "503")
    for outcome in redemption_outcomes:
        REDEMPTIONS.labels(outcome)
    for outcome in attempt_outcomes:
        WEBHOOK_ATTEMPTS.labels(outcome)
        WEBHOOK_DURATION.labels(outcome)
    for credential in get_args(Credential):
        AUTH_FAILURES.labels(credential)
    actions_known(actions)


def actions_known(actions: Iterable[tuple[str, str]]) -> None:
    """(client, action) pairs links may now be minted for, at 0 until they are."""
    for client_id, action in actions:
        LINKS_MINTED.labels(client_id, action)


def link_minted(client_id: str, action: str) -> None:
    _minted(client_id, action).inc()


def links_minted(client_id: str, actions: Iterable[str]) -> None:
    for action, count in Tally(actions).items():
        _minted(client_id, action).inc(count)


# Children by label values, for the families counted on every request: ``labels()``
# takes a lock and builds its key each time (prometheus_client), the dict does not.
# A child, once made, stays its family's for the life of the process.
_redemptions: dict[str, Any] = {}
_requests: dict[tuple[str, str, int], Any] = {}
_mints: dict[tuple[str, str], Any] = {}


def _minted(client_id: str, action: str) -> Any:
    child = _mints.get((client_id, action))
    if child is None:
        child = _mints[client_id, action] = LINKS_MINTED.labels(client_id, action)
    return child


def redemption(outcome: str) -> None:
    child = _redemptions.get(outcome)
    if child is None:
        child = _redemptions[outcome] = REDEMPTIONS.labels(outcome)
    child.inc()


def webhook_attempt(outcome: str, seconds: float | None = None) -> None:
    """Once per delivery attempt (inline, sync or background); ``outcome`` is ``Attempt.kind``:
    ``delivered`` 2xx; ``rejected`` 4xx; ``failed`` any other answer (3xx, 5xx,
    garbage); ``timeout``; ``unreachable`` (refused, reset, no webhook_url).
    ``seconds``: how long the HTTP exchange took (None: no request was made)."""
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
    if seconds is not None:
        WEBHOOK_DURATION.labels(outcome).observe(seconds)


def delivery_failed() -> None:
    """A delivery's last scheduled attempt failed: its status is now ``failed``."""
    DELIVERIES_FAILED.inc()


def pool_waited(seconds: float) -> None:
    POOL_WAIT.observe(seconds)


def pool_sampled(size: int, in_use: int) -> None:
    POOL_SIZE.set(size)
    POOL_IN_USE.set(in_use)


def auth_failed(credential: Credential) -> None:
    AUTH_FAILURES.labels(credential).inc()


def rate_limited(limit: str) -> None:
    """``limit``: ``auth``, ``link`` (``rate_limits.Limited``) or ``mint``."""
    RATE_LIMITED.labels(limit).inc()


def request_finished(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    child = _requests.get(key)
    if child is None:
        child = _requests[key] = REQUEST_DURATION.labels(method, route, str(status))
    child.observe(seconds)


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


class _BuildInfo(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "action_links_build_info",
            "The running version, and the revision it was built from (ACTION_LINKS_REVISION).",
            labels=["version", "revision"],
        )
        info.add_metric([__version__, os.environ.get(REVISION_ENV) or "unknown"], 1)
        yield info


class _Workers(Collector):
    """Every worker's files merged, plus the families no process has written yet (empty)."""

    def collect(self) -> Iterator[Metric]:
        merged = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]  # untyped upstream
        written = set()
        for family in merged.collect():  # type: ignore[no-untyped-call]  # untyped upstream
            written.add(family.name)
            yield family
        for metric in FAMILIES:
            for family in metric.describe():
                if family.name not in written:
                    yield family


def _exposition(backlog: tuple[int, float] | None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        registry.register(_Workers())
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_BuildInfo())
    if backlog is not None:
        registry.register(_Backlog(*backlog))
    return body + generate_latest(registry)


def sample_pool(store: Store) -> None:
    """This process's pool: its size and the connections in use now (checked out, less
    those the store keeps idle between redemptions)."""
    pool = store.engine.sync_engine.pool
    size = getattr(pool, "size", None)
    checked_out = getattr(pool, "checkedout", None)
    if callable(size) and callable(checked_out):
        pool_sampled(size(), max(0, checked_out() - store.kept_connections()))


async def render(store: Store) -> bytes:
    """The Prometheus text exposition of every metric (files are read off the event loop)."""
    backlog = await delivery_backlog(store)
    return await asyncio.to_thread(_exposition, backlog)
