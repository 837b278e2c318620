"""The application factory. Nothing is created at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api import admin, demo, links, ops, redirect
from service.api.problems import BodyLimitMiddleware, install_error_handlers
from service.config import Settings
from service.state import AppState


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.build(settings)
        app.state.services = state
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="Action Links",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware)
    # Routes are matched in order: the busiest paths (links followed by people,
    # then minting) come first, so they do not pay for matching the admin API.
    app.include_router(redirect.router)
    app.include_router(links.router)
    app.include_router(admin.router)
    app.include_router(ops.router)
    if settings.dev:
        app.include_router(demo.router)
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory used by ``action-links serve`` (each worker calls it)."""
    return create_app(Settings())
