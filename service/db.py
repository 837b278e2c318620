"""Engine and session factory, and the one list of errors that mean "database unreachable"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

from alembic import command
from service.config import Settings

# Errors raised when the database cannot be reached or drops a connection.
# Callers turn them into 503s; everything else is a bug and must surface.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    TimeoutError,
    # The same, raised by asyncpg itself on the hot paths that use it directly
    # (``driver_connection``): connection lost or refused, server shutting down.
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url, connect_args={"timeout": 30}, **overrides
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    options: dict[str, Any] = {
        # A fixed set of connections, opened on demand and kept: overflow connections
        # would be opened and closed again for every burst above the pool size, and
        # opening one costs more CPU than the queries it serves (bench/README.md).
        "pool_size": settings.database_pool_size,
        "max_overflow": 0,
        # Fail fast when the database is down: a 503 beats a hung request.
        "pool_timeout": 5,
        "connect_args": {
            "timeout": 5,
            "command_timeout": 15,
            "server_settings": {"application_name": "action-links"},
        },
    }
    options.update(overrides)
    return create_async_engine(settings.database_url, **options)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection itself, for the one-statement hot paths (PostgreSQL only).

    SQLAlchemy's statement machinery costs more CPU than the claim's whole round
    trip (bench/README.md), so the claim borrows the driver connection from the
    engine's pool and runs its one prepared statement on it, in autocommit (no
    transaction is opened on it). A connection that failed, or whose statement
    was interrupted, is invalidated rather than handed to the next request.
    """
    raw = await engine.raw_connection()
    try:
        yield raw.driver_connection
    except BaseException as exc:
        if is_unavailable(exc) or not isinstance(exc, Exception):
            await greenlet_spawn(raw.invalidate, exc)
        raise
    finally:
        # Returning a connection may have to await the driver: do it where SQLAlchemy can.
        await greenlet_spawn(raw.close)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


PACKAGE_DIR = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """Migrations ship inside the wheel (``service/_alembic``) or live at the repo's top."""
    shipped = PACKAGE_DIR / "_alembic"
    root = shipped if (shipped / "env.py").exists() else PACKAGE_DIR.parent / "alembic"
    config = Config()
    config.set_main_option("script_location", str(root))
    config.attributes["database_url"] = database_url
    return config


def migrate(settings: Settings) -> None:
    """Bring the database to the newest migration (synchronous: alembic runs its own loop)."""
    command.upgrade(alembic_config(settings.database_url), "head")
