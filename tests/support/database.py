"""A fresh, migrated PostgreSQL database per test session, emptied before each test."""

from __future__ import annotations

import asyncio
import os
import secrets

import asyncpg

from service.config import Settings
from service.db import migrate

SERVER_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = (
    "deliveries",
    "redemptions",
    "claims",
    "revocations",
    "subject_revocations",
    "api_keys",
    "actions",
    "clients",
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
    """Create (and migrate) a database with a unique name; returns its asyncpg URL."""
    name = f"al_test_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_execute(SERVER_URL, f'CREATE DATABASE "{name}"'))
    url = _server_dsn(name).replace("postgresql://", "postgresql+asyncpg://", 1)
    if migrated:
        migrate(Settings(database_url=url))
    return url


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_execute(SERVER_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def truncate_all(url: str) -> None:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    asyncio.run(_execute(dsn, f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """Read the database directly, to check what the service really recorded."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()
