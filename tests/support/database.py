"""Test databases: a migrated PostgreSQL per session (emptied before each test), or a
migrated SQLite file per test; and reading either directly."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.config import Settings
from service.db import migrate

POSTGRES, SQLITE = "postgres", "sqlite"
SQLITE_PREFIX = "sqlite+aiosqlite:///"
SERVER_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = (
    "deliveries",
    "redemptions",
    "claims",
    "revocations",
    "subject_revocations",
    "code_failures",
    "api_keys",
    "actions",
    "clients",
    "failure_counters",
)


def _server_dsn(database: str) -> str:
    base, _, _ = SERVER_URL.rpartition("/")
    return f"{base}/{database}"


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def postgres_available() -> bool:
    try:
        asyncio.run(_execute(SERVER_URL, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


def create_database(migrated: bool = True) -> str:
    """Create (and migrate) a database with a unique name; returns its asyncpg URL.

    Its commits do not wait for the WAL to reach the disk (``synchronous_commit``
    off): what every other connection sees is unchanged, only what a crash of the
    machine would keep, which no test looks at. A flush is 0.5-2 ms here, and a
    test commits dozens of times (its setup alone: emptying, a client, a key,
    an action).
    """
    name = f"al_test_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(
        _execute(
            SERVER_URL,
            f'CREATE DATABASE "{name}"',
            f'ALTER DATABASE "{name}" SET synchronous_commit = off',
        )
    )
    url = _server_dsn(name).replace("postgresql://", "postgresql+asyncpg://", 1)
    if migrated:
        migrate(Settings(database_url=url))
    return url


def drop_database(url: str) -> None:
    _emptier.forget(url)
    name = url.rsplit("/", 1)[1]
    asyncio.run(_execute(SERVER_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


EMPTY_ALL = "; ".join(
    [*(f"DELETE FROM {table}" for table in TABLES), "ALTER SEQUENCE redemptions_seq_seq RESTART"]
)


class _Emptier:
    """One connection per database, kept for emptying it before each test, on an event
    loop of its own (run between tests, never while a test's loop runs): a new loop and
    a new connection cost 6-15 ms of the few a test's emptying takes otherwise."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: dict[str, asyncpg.Connection] = {}

    def run(self, dsn: str, statement: str) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._run(dsn, statement))

    async def _run(self, dsn: str, statement: str) -> None:
        connection = self._connections.get(dsn)
        if connection is not None and not connection.is_closed():
            try:
                await connection.execute(statement)
                return
            except (
                OSError,
                asyncpg.InterfaceError,
                asyncpg.PostgresConnectionError,
                asyncpg.AdminShutdownError,
            ):
                pass  # ended by the server (a test that terminates backends): a new one
        connection = await asyncpg.connect(dsn, timeout=5)
        self._connections[dsn] = connection
        await connection.execute(statement)

    def forget(self, url: str) -> None:
        """Close the connection to a database about to be dropped."""
        connection = self._connections.pop(_dsn(url), None)
        if connection is not None and self._loop is not None:
            self._loop.run_until_complete(connection.close(timeout=5))


_emptier = _Emptier()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def truncate_all(url: str) -> None:
    """Empty every table and restart the audit log's sequence, in one transaction.

    ``DELETE`` rather than ``TRUNCATE``: on tables of a test's few rows it takes
    a few milliseconds where ``TRUNCATE`` (new files for every table and index)
    takes 150-250, and it runs before every PostgreSQL test. (Children first;
    every foreign key cascades anyway.)
    """
    _emptier.run(_dsn(url), EMPTY_ALL)


def create_sqlite_database(path: Path) -> Path:
    """Migrate a new SQLite file at ``path`` (alembic, as for PostgreSQL)."""
    migrate(Settings(database_url=SQLITE_PREFIX + str(path)))
    return path


def copy_sqlite_database(template: Path, path: Path) -> str:
    """A copy of a migrated SQLite file; returns its URL."""
    shutil.copyfile(template, path)
    return SQLITE_PREFIX + str(path)


def _utc(stored: bytes) -> datetime:
    """A timestamp column as SQLAlchemy writes it on SQLite (UTC, without offset)."""
    return datetime.fromisoformat(stored.decode()).replace(tzinfo=UTC)


# Read only by connections opened with ``detect_types`` (the ones below), so
# timestamps compare as on PostgreSQL; the service's own connections parse them
# through SQLAlchemy.
sqlite3.register_converter("DATETIME", _utc)


def _fetch_sqlite(url: str, query: str, args: tuple[object, ...]) -> list[Any]:
    # ``$1`` is PostgreSQL's numbered parameter; SQLite spells it ``?1``.
    connection = sqlite3.connect(
        url.removeprefix(SQLITE_PREFIX), timeout=30, detect_types=sqlite3.PARSE_DECLTYPES
    )
    connection.row_factory = sqlite3.Row
    try:
        with connection:
            return connection.execute(query.replace("$", "?"), args).fetchall()
    finally:
        connection.close()


async def fetch(url: str, query: str, *args: object) -> list[Any]:
    """Read (or write) the database directly, to check what the service really recorded.

    Rows are read by column name (``row["n"]``) on either database.
    """
    if url.startswith(SQLITE_PREFIX):
        return _fetch_sqlite(url, query, args)
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


@pytest.fixture(scope="module", name="database_url")
def module_database_url(postgres_url: str) -> Iterator[str]:
    """A migrated database of the module's own, for a service process all its tests share
    (each test its own client): import it into the module to replace the per-test one."""
    url = create_database()
    yield url
    drop_database(url)
