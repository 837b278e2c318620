"""Engine and session factory, and the one list of errors that mean "database unreachable"."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import asyncpg
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, inspect, text
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


# What asyncpg raises itself, where the redemption path uses it directly
# (``service.pgdriver``): a lost or unusable connection, or a server error.
DRIVER_ERRORS: tuple[type[Exception], ...] = (asyncpg.InterfaceError, asyncpg.PostgresError)


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "").startswith(UNAVAILABLE_SQLSTATES)
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return exc.connection_invalidated or sqlstate.startswith(UNAVAILABLE_SQLSTATES)


POOL_TIMEOUT_SECONDS = 5.0


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    # hide_parameters: statement parameters (webhook secrets, key hashes) never
    # appear in a logged error or in an exception's message.
    overrides.setdefault("hide_parameters", True)
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url, connect_args={"timeout": 30}, **overrides
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    options: dict[str, Any] = {
        # A fixed pool: overflow connections are closed as soon as they are
        # returned, and under load that meant a new PostgreSQL backend (a fork,
        # authentication, the asyncpg type codecs) every few requests, which cost
        # more than the requests themselves. Requests wait for a connection instead.
        "pool_size": settings.database_pool_size,
        "max_overflow": 0,
        # Fail fast when the database is down: a 503 beats a hung request.
        "pool_timeout": POOL_TIMEOUT_SECONDS,
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
VERSION_TABLE = "alembic_version"


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


@cache
def schema_head() -> str:
    """The newest migration this code ships (read once per process)."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None, "no migrations found"
    return head


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The migration the database is at; None when it was never migrated."""

    def read(connection: Connection) -> str | None:
        # Not alembic's MigrationContext: it logs two INFO lines per call, and this
        # runs on every readiness probe.
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()

    async with engine.connect() as conn:
        return await conn.run_sync(read)
