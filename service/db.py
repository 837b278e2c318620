"""The store of the configured database, the session factory on its engine, and migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from alembic import command
from service.config import Settings
from service.store import Store, postgres, sqlite
from service.tracing import NO_TRACING, Tracing


def open_store(settings: Settings, tracing: Tracing = NO_TRACING, **engine_options: Any) -> Store:
    """The store of the configured database, on an engine of its own (``engine_options``
    override the engine's defaults), its statements traced by ``tracing``. Every process
    builds its storage here."""
    if settings.is_sqlite:
        store: Store = sqlite.SqliteStore(sqlite.create_engine(settings, **engine_options))
    else:
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
