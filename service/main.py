"""The application factory. Nothing is created at import time."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive, Scope, Send

from service import __version__, metrics, tracing
from service.api import (
    admin,
    audit,
    deliveries,
    demo,
    docs,
    finish,
    lifecycle,
    links,
    ops,
    redirect,
    routes,
    webhook_event,
)
from service.api.front import Front
from service.api.openapi import install_openapi
from service.api.problems import install_error_handlers
from service.config import Settings
from service.errors import DatabaseUnavailable
from service.pages import Pages
from service.process_metrics import PeriodicSampling
from service.purge import PeriodicPurge
from service.redeem import Outcome
from service.state import AppState
from service.webhooks import ATTEMPT_KINDS

log = logging.getLogger(__name__)

# FastAPI's own telemetry, off whatever the environment says (FASTAPI_OTEL_AUTO_CONFIGURE
# included): its server spans record the URL path, which holds a link's token. Traces
# come from service.tracing, named by route template.
NO_FASTAPI_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}


# The service's routers, in the order the app matches them (demo's only with --dev).
ROUTERS = (
    links.router,
    lifecycle.router,
    audit.router,
    finish.router,
    admin.router,
    deliveries.router,
    redirect.router,
    ops.router,
    docs.router,
)


class ActionLinks(FastAPI):
    """The service's app: while it answers a request, the routes it shares with every
    other app of the process read its dependency overrides (``routes.ServingApp``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = routes.serving.set(self)
        try:
            await super().__call__(scope, receive, send)
        finally:
            routes.serving.reset(token)


async def initialize_metrics(app: FastAPI, state: AppState) -> None:
    """This worker's label values known in advance, at 0 (``metrics.initialize``)."""
    try:
        actions = await state.registry.all_actions()
    except (DatabaseUnavailable, SQLAlchemyError) as exc:
        log.warning("actions not read for the metrics (%s): counted from their first mint", exc)
        actions = []
    unavailable = routes.documenting(app.routes, 503)
    metrics.initialize((o.value for o in Outcome), ATTEMPT_KINDS, actions, unavailable)


def create_app(settings: Settings, traced: tracing.Tracing | None = None) -> FastAPI:
    """The app; ``traced``: its tracing, by default what the ``OTEL_*`` variables ask for."""
    spans = tracing.from_environment() if traced is None else traced

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.build(settings, spans)
        app.state.services = state
        await initialize_metrics(app, state)
        sampling = PeriodicSampling(state.store).start()
        await state.start()
        # Everything built so far (modules, routes, the OpenAPI models) lives as
        # long as the process: out of the collector's sight, a full collection
        # no longer walks it in the middle of requests (bench/README.md).
        gc.freeze()
        retention = timedelta(days=settings.redemption_retention_days)
        purging = PeriodicPurge(state.store, settings.purge_interval, retention).start()
        try:
            yield
        finally:
            await purging.stop()
            await sampling.stop()
            await state.close()
            spans.shutdown()
            metrics.process_exiting()

    app = ActionLinks(
        title="Action Links",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=NO_FASTAPI_TELEMETRY,
    )
    # The people-facing pages are built with the app, not in the lifespan: the
    # middleware in front of every route may answer with one at any time.
    app.state.pages = Pages(settings.pages_dir)
    install_error_handlers(app)
    install_openapi(app)
    # The access log, server spans (when traced), the NUL guard, the body limit and the
    # /r/ fast path, in that order, as one middleware (service/api/front.py).
    app.add_middleware(Front, traced=spans.middleware if spans.enabled else None)
    # The routers' own routes, built once per process (at import), not included:
    # inclusion would build every route again for this app (tens of milliseconds of
    # dependency analysis and pydantic models per app), the same routes but for the
    # app whose dependency overrides they read, which ActionLinks provides instead.
    # The routers have no prefix, dependencies or options of their inclusion to add.
    for router in (*ROUTERS, demo.router) if settings.dev else ROUTERS:
        app.router.routes.extend(router.routes)
    app.webhooks.include_router(webhook_event.router)
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory used by ``action-links serve`` (each worker calls it)."""
    return create_app(Settings())
