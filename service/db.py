"""The store of the configured database, the session factory on its engine, and migrations."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.config import Settings
from service.store import Store
from service.tracing import NO_TRACING, Tracing

if TYPE_CHECKING:
    from alembic.config import Config


def open_store(settings: Settings, tracing: Tracing = NO_TRACING, **engine_options: Any) -> Store:
    """The store of the configured database, on an engine of its own (``engine_options``
    override the engine's defaults), its statements traced by ``tracing``. Every process
    builds its storage here.

    Only the configured database's module is imported: a PostgreSQL process never
    loads SQLAlchemy's SQLite dialect nor ``sqlite3`` (~1 MB each process, bench/README.md)."""
    if settings.is_sqlite:
        from service.store import sqlite

        store: Store = sqlite.SqliteStore(sqlite.create_engine(settings, **engine_options))
    else:
        from service.store import postgres

        engine = postgres.create_engine(settings, **engine_options)
        store = postgres.PostgresStore(engine, tracing)
    tracing.instrument(store.engine)
    return store


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def one_off_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session for a command that runs once (the CLI's admin commands, dev seeding),
    on a store of its own that is closed afterwards. The caller commits."""
    store = open_store(settings)
    try:
        async with create_session_factory(store.engine)() as session:
            yield session
    finally:
        await store.close()


PACKAGE_DIR = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version"


def migrations_dir() -> Path:
    """Migrations ship inside the wheel (``service/_alembic``) or live at the repo's top."""
    shipped = PACKAGE_DIR / "_alembic"
    return shipped if (shipped / "env.py").exists() else PACKAGE_DIR.parent / "alembic"


def alembic_config(database_url: str) -> Config:
    # Imported here, not at the top: alembic (and mako) cost every worker ~11 MB of
    # memory, and only the commands that migrate need them (bench/README.md).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = database_url
    return config


def migrate(settings: Settings) -> None:
    """Bring the database to the newest migration (synchronous: alembic runs its own loop)."""
    from alembic import command

    command.upgrade(alembic_config(settings.database_url), "head")


@cache
def schema_head() -> str:
    """The newest migration this code ships (read once per process).

    Read from the migration files' ``revision`` and ``down_revision`` without
    importing alembic, which every worker would then carry (~11 MB): the head is
    the one revision that no other names as its ``down_revision``. One branch
    only, as alembic's ``get_current_head`` requires (``tests/test_migrations.py``
    checks that both agree).
    """
    revisions: dict[str, str | None] = {}
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        found = _revision_of(path.read_text(encoding="utf-8"))
        if found is not None:
            revisions[found[0]] = found[1]
    parents = set(revisions.values())
    heads = [revision for revision in revisions if revision not in parents]
    assert len(heads) == 1, f"migrations must have exactly one head, found {heads}"
    return heads[0]


def _revision_of(source: str) -> tuple[str, str | None] | None:
    """A migration file's (``revision``, ``down_revision``), from its top-level assignments."""
    values: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            target, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            if not isinstance(node.targets[0], ast.Name):
                continue
            target, value = node.targets[0].id, node.value
        else:
            continue
        if target in ("revision", "down_revision") and isinstance(value, ast.Constant):
            values[target] = value.value
    revision, parent = values.get("revision"), values.get("down_revision")
    if not isinstance(revision, str) or not (parent is None or isinstance(parent, str)):
        return None
    return revision, parent


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
