"""Before a command relies on the database: can it be reached, does it exist, is it migrated?

A first run meets all three (PostgreSQL not started, ``createdb`` not run,
``action-links migrate`` not run), and each used to end in a driver's
traceback. Here each is one line that says what to do, raised as
``DatabaseNotReady``; the CLI prints it and exits 1.

- ``database_errors(url)``: a block in which a driver error that means
  "unreachable", "no such database", "login refused" or "no schema" becomes
  ``DatabaseNotReady``. Any other error is a bug and passes unchanged.
- ``require_current_schema(engine)``: the schema is at the newest migration
  this code ships (what ``/readyz`` asks too), else ``DatabaseNotReady``.
- ``check_database(settings)``: both, once, for ``serve`` and ``dispatcher``
  before they start. While they run, an unreachable database is a 503 and
  ``/readyz`` says not ready.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.db import open_store, schema_head, schema_revision
from service.errors import DatabaseUnavailable
from service.store.sql import unavailable

MIGRATE = "run `action-links migrate`"
# SQLSTATEs met on a first run: no such database, login refused, no tables yet.
NO_DATABASE = "3D000"
LOGIN_REFUSED = ("28000", "28P01")
NO_TABLE = "42P01"


class DatabaseNotReady(Exception):
    """The database cannot serve this command yet; the message says what to do."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        pending.extend([current.__context__, current.__cause__])
        if isinstance(orig, BaseException):
            pending.append(orig)


def _sqlstate(exc: BaseException) -> str:
    for cause in _causes(exc):
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str):
            return state
    return ""


def explain(exc: BaseException, database_url: str) -> str | None:
    """The one line for an error that means the database is not there for us; else None."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        import sqlite3  # here: a PostgreSQL process never loads SQLite (service.db.open_store)

        for cause in _causes(exc):
            if isinstance(cause, sqlite3.OperationalError):
                return (
                    f"cannot open the SQLite database {url.database} ({cause}): does its "
                    "directory exist, and may this user write there? (DATABASE_URL)"
                )
        return None
    server = f"{url.host or 'localhost'}:{url.port or 5432}"
    user = url.username or "postgres"
    state = _sqlstate(exc)
    if state == NO_DATABASE:
        port = f" -p {url.port}" if url.port and url.port != 5432 else ""
        return (
            f'database "{url.database}" does not exist on {server}: create it with '
            f"`createdb -h {url.host or 'localhost'}{port} -U {user} {url.database}`, "
            f"then {MIGRATE}"
        )
    if state in LOGIN_REFUSED:
        return (
            f'PostgreSQL at {server} refused user "{user}": check the user and password '
            "in DATABASE_URL"
        )
    if state == NO_TABLE:
        return f"the database has no schema yet: {MIGRATE}"
    # The store's boundary says DatabaseUnavailable; alembic's own engine (migrate) has none.
    if any(isinstance(c, DatabaseUnavailable) or unavailable(c) for c in _causes(exc)):
        return (
            f"cannot reach PostgreSQL at {server}: start it, or point DATABASE_URL at a "
            "running server"
        )
    return None


def _sqlite_directory_problem(database_url: str) -> str | None:
    """Said before SQLite is asked: a failed open inside aiosqlite's thread can race the
    closing event loop and print that thread's traceback after our line."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    directory = Path(url.database).absolute().parent
    if not directory.is_dir():
        return (
            f"cannot create the SQLite database {url.database}: the directory {directory} "
            "does not exist (create it, or change DATABASE_URL)"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"cannot write the SQLite database {url.database}: this user may not write to "
            f"{directory} (DATABASE_URL)"
        )
    return None


@contextmanager
def database_errors(database_url: str) -> Iterator[None]:
    """Inside the block, a missing or unreachable database raises ``DatabaseNotReady``."""
    problem = _sqlite_directory_problem(database_url)
    if problem is not None:
        raise DatabaseNotReady(problem)
    try:
        yield
    except DatabaseNotReady:
        raise
    except Exception as exc:
        line = explain(exc, database_url)
        if line is None:
            raise
        raise DatabaseNotReady(line) from exc


async def require_current_schema(engine: AsyncEngine) -> None:
    current = await schema_revision(engine)
    head = schema_head()
    if current is None:
        raise DatabaseNotReady(f"the database has no schema yet: {MIGRATE}")
    if current != head:
        raise DatabaseNotReady(
            f"the database schema is at {current}, this version of action-links needs "
            f"{head}: {MIGRATE} (with the newest version that uses this database)"
        )


def check_database(settings: Settings) -> None:
    """Reachable, existing and migrated, checked once with a connection of its own."""
    problem = schema_problem(settings)
    if problem is not None:
        raise DatabaseNotReady(problem)


def schema_problem(settings: Settings) -> str | None:
    """Refuses an unreachable or missing database (``DatabaseNotReady``); answers what
    is wrong with its schema, or None when it is at the newest migration.

    ``serve`` only warns about the schema: it then runs not ready (``/readyz`` 503,
    as the contract describes) until ``migrate`` has run, so an orchestrator can
    start the app and the migration in either order.
    """

    async def check() -> str | None:
        store = open_store(settings)
        try:
            await require_current_schema(store.engine)
        except DatabaseNotReady as exc:
            return str(exc)
        finally:
            await store.close()
        return None

    with database_errors(settings.database_url):
        return asyncio.run(check())
