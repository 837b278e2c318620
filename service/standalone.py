"""``action-links dispatcher``: the webhook dispatcher as a process of its own.

With ``--metrics-port`` it also answers ``/healthz`` and ``/metrics`` (nothing
else), so that the attempts it makes and the deliveries that end ``failed``
in it (retries happen there when the web tier runs with
``WEBHOOK_DISPATCHER=false``) reach Prometheus, and an orchestrator can probe
it. One process: its metrics live in memory, with prometheus-client's
process collector.
"""

from __future__ import annotations

import asyncio
import signal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import metrics, tracing
from service.api.bearer import matches_any
from service.api.problem_json import problem
from service.api.scrape import exposition
from service.config import Settings
from service.db import create_session_factory, open_store
from service.delivery import Deliverer
from service.dispatcher import Dispatcher
from service.logs import logging_config
from service.registry import Registry
from service.store import Store
from service.webhooks import ATTEMPT_KINDS, WebhookClient

OpsAddress = tuple[str, int]  # where /healthz and /metrics are served: host, port


def bearer_of(request: Request) -> str | None:
    """The credential of an ``Authorization: Bearer …`` header, if any."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def ops_app(store: Store, settings: Settings) -> Starlette:
    """``/metrics`` wants a ``METRICS_TOKEN`` when one is configured, as the service's does."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def prometheus_metrics(request: Request) -> Response:
        tokens = settings.metrics_tokens()
        if tokens and not matches_any(bearer_of(request), tokens):
            metrics.auth_failed("metrics_token")
            return problem(401, "unauthorized", "Unauthorized", "a metrics token is required")
        return await exposition(store)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", prometheus_metrics)])


class OpsServer:
    """uvicorn serving ``ops_app`` inside the dispatcher's event loop, until stopped."""

    def __init__(self, store: Store, settings: Settings, address: OpsAddress) -> None:
        host, port = address
        config = uvicorn.Config(
            ops_app(store, settings),
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_config=logging_config(settings.log_level, settings.log_format),
            ws="none",
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> OpsServer:
        self._task = asyncio.create_task(self._server.serve(), name="dispatcher-ops")
        return self

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None


async def run_standalone(settings: Settings, serve_ops: OpsAddress | None = None) -> None:
    """``action-links dispatcher``: dispatch until SIGTERM or SIGINT; with ``serve_ops``,
    answer ``/healthz`` and ``/metrics`` on that address meanwhile."""
    traced = tracing.from_environment()
    store = open_store(settings, traced)
    http = WebhookClient(settings.webhook_timeout)
    registry = Registry(create_session_factory(store.engine), ttl=settings.cache_ttl)
    deliverer = Deliverer(
        http,
        registry,
        store,
        settings.webhook_timeout,
        settings.webhook_retry_schedule,
        traced,
        lease_grace=settings.webhook_lease_grace,
    )
    dispatcher = Dispatcher(
        store,
        deliverer,
        poll_interval=settings.webhook_poll_interval,
        stop_grace=settings.webhook_stop_grace,
    )
    store.watch(registry.forget)  # a rotated webhook secret signs the next attempt
    metrics.initialize((), ATTEMPT_KINDS, (), ())
    ops = None
    if serve_ops is not None:
        ops = OpsServer(store, settings, serve_ops).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    dispatcher.start()
    try:
        await stop.wait()
    finally:
        await dispatcher.stop()
        if ops is not None:
            await ops.stop()
        await http.aclose()
        await store.close()
        traced.shutdown()
