"""The application factory. Nothing is created at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from service import __version__, metrics
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
    webhook_event,
)
from service.api.access import AccessMiddleware
from service.api.link_fast_path import LinkFastPath
from service.api.openapi import install_openapi
from service.api.problems import BodyLimitMiddleware, install_error_handlers
from service.api.url_guard import NulInUrlMiddleware
from service.config import Settings
from service.pages import Pages
from service.purge import PeriodicPurge
from service.state import AppState


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.build(settings)
        app.state.services = state
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
            await state.close()
            metrics.process_exiting()

    app = FastAPI(
        title="Action Links",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    # The people-facing pages are built with the app, not in the lifespan: the
    # middleware in front of every route may answer with one at any time.
    app.state.pages = Pages(settings.pages_dir)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(LinkFastPath)  # inside the three below: logged, guarded, limited
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(NulInUrlMiddleware)
    app.add_middleware(AccessMiddleware)  # outermost of ours: sees every answer, 413s too
    app.include_router(links.router)
    app.include_router(lifecycle.router)
    app.include_router(audit.router)
    app.include_router(finish.router)
    app.include_router(admin.router)
    app.include_router(deliveries.router)
    app.include_router(redirect.router)
    app.include_router(ops.router)
    app.include_router(docs.router)
    app.webhooks.include_router(webhook_event.router)
    if settings.dev:
        app.include_router(demo.router)
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory used by ``action-links serve`` (each worker calls it)."""
    return create_app(Settings())
