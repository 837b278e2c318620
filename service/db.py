"""Engine and session factory, and the one list of errors that mean "database unreachable"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from alembic import command
from service.config import Settings

# Errors raised when the database cannot be reached or drops a connection.
# Callers turn them into 503s; everything else is a bug and must surface.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    TimeoutError,
    PoolTimeout,  # every pooled connection is busy (e.g. stuck on a stalled network)
)

# SQLSTATE classes of a server or connection that is gone: 08 connection
# exception (asyncpg's "connection was closed in the middle of operation"
# arrives as a plain DBAPIError), 57P shutdown or cannot connect now, 53300
# too many connections.
UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return exc.connection_invalidated or sqlstate.startswith(UNAVAILABLE_SQLSTATES)


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    # Parameters can hold secrets (a new client's webhook secret): keep them
    # out of the messages of database errors, which end up in logs.
    overrides = {"hide_parameters": True, **overrides}
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url, connect_args={"timeout": 30}, **overrides
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    options: dict[str, Any] = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_pool_size,
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
