"""Clients, API keys and actions as the hot paths see them: snapshots, cached briefly.

A process may serve a client's configuration from memory for at most
``cache_ttl`` seconds (API.md: 30 s at most). On PostgreSQL every admin
change, made by any process or by the CLI, is also announced to every process
(``service.store.changes``), which drops the client's entries at once
(``forget``); the lifetime is the fallback for a missed announcement, and all
there is on SQLite. Changes made through this process drop its own entries
at once too.

API keys are looked up by their SHA-256 (keys carry 256 random bits, so a
fast hash is as strong as a slow one), then the stored hash is compared in
constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.models import Action, ApiKey, Client

K = TypeVar("K")
V = TypeVar("V")

API_KEY_PREFIX = "alk_"
API_KEY_BYTES = 32  # 256 bits
API_KEY_MAX_LENGTH = 200


@dataclass(frozen=True, slots=True)
class ActionConfig:
    """An action's settings: read from its row here, for the hot paths and the admin alike."""

    name: str
    label: str | None
    success_url: str
    failure_url: str | None
    ttl: int
    max_ttl: int
    max_uses: int | None
    confirm: str
    delivery: str
    enabled: bool
    code: bool
    one_click: bool

    @classmethod
    def from_row(cls, row: Action) -> ActionConfig:
        return cls(
            name=row.name,
            label=row.label,
            success_url=row.success_url,
            failure_url=row.failure_url,
            ttl=row.ttl,
            max_ttl=row.max_ttl,
            max_uses=row.max_uses,
            confirm=row.confirm,
            delivery=row.delivery,
            enabled=row.enabled,
            code=row.code,
            one_click=row.one_click,
        )


@dataclass(frozen=True, slots=True)
class ClientConfig:
    id: str
    name: str
    webhook_url: str | None
    webhook_secret: str
    allowed_redirects: tuple[str, ...]
    enabled: bool
    actions: Mapping[str, ActionConfig]

    def action(self, name: str) -> ActionConfig | None:
        return self.actions.get(name)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_BYTES)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class SingleFlight(Generic[K, V]):
    """Concurrent cache misses for one key share one load.

    When an entry expires under load, every request in flight misses it at
    once; without this each would query the database for the same row and
    queue for a pooled connection, which showed as the redirect's p99
    (bench/README.md). The load runs as its own task, so a waiter that is
    cancelled does not cancel it for the others.
    """

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, load: Callable[[], Coroutine[Any, Any, V]]) -> V:
        task = self._running.get(key)
        if task is None:
            task = self._running[key] = asyncio.ensure_future(load())
            task.add_done_callback(partial(self._finished, key))
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters got it, or there were none left

    def forget(self) -> None:
        """Later misses start a new load instead of joining one that began before a change."""
        self._running.clear()


class Registry:
    """Cached, read-only view of configuration, shared by every request of a process."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl: float) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._clients: dict[str, tuple[float, ClientConfig | None]] = {}
        self._keys: dict[str, tuple[float, str]] = {}
        self._client_loads: SingleFlight[str, ClientConfig | None] = SingleFlight()
        self._key_loads: SingleFlight[str, str | None] = SingleFlight()
        self._generation = 0  # bumped by forget(): a load begun before it stores nothing

    def forget(self, client_id: str | None = None) -> None:
        """Drop the client's cached entries (None: all), after a change made anywhere.

        Loads in flight began before the change: they store nothing (a new
        generation), and later misses start loads of their own."""
        self._generation += 1
        self._client_loads.forget()
        self._key_loads.forget()
        if client_id is None:
            self._clients.clear()
            self._keys.clear()
            return
        self._clients.pop(client_id, None)
        self._keys = {h: v for h, v in self._keys.items() if v[1] != client_id}

    async def client(self, client_id: str) -> ClientConfig | None:
        """The client with its actions, or None when it does not exist."""
        cached = self._clients.get(client_id)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        return await self._client_loads.run(client_id, partial(self._load_client, client_id))

    async def _load_client(self, client_id: str) -> ClientConfig | None:
        started, generation = time.monotonic(), self._generation
        async with self._sessions() as session:
            config = await load_client(session, client_id)
        if generation == self._generation:
            self._clients[client_id] = (started, config)
        return config

    async def _load_key(self, digest: str) -> str | None:
        """The id of the client owning the key with this SHA-256, cached when found."""
        started, generation = time.monotonic(), self._generation
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey.key_hash, ApiKey.client_id).where(ApiKey.key_hash == digest)
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        if generation == self._generation:
            self._keys[digest] = (started, row.client_id)
        client_id: str = row.client_id
        return client_id

    async def all_actions(self) -> list[tuple[str, str]]:
        """Every (client id, action name) configured, read now (not cached)."""
        async with self._sessions() as session:
            rows = await session.execute(select(Action.client_id, Action.name))
            return [(row.client_id, row.name) for row in rows]

    async def authenticate(self, presented: str) -> ClientConfig | None:
        """The enabled client that owns this API key, or None."""
        if not presented.startswith(API_KEY_PREFIX) or len(presented) > API_KEY_MAX_LENGTH:
            return None
        digest = hash_api_key(presented)
        cached = self._keys.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            client_id: str | None = cached[1]
        else:
            client_id = await self._key_loads.run(digest, partial(self._load_key, digest))
        if client_id is None:
            return None
        client = await self.client(client_id)
        if client is None or not client.enabled:
            return None
        return client


async def load_client(session: AsyncSession, client_id: str) -> ClientConfig | None:
    row = await session.get(Client, client_id)
    if row is None:
        return None
    actions = (await session.scalars(select(Action).where(Action.client_id == client_id))).all()
    return ClientConfig(
        id=row.id,
        name=row.name,
        webhook_url=row.webhook_url,
        webhook_secret=row.webhook_secret,
        allowed_redirects=tuple(row.allowed_redirects),
        enabled=row.enabled,
        actions=MappingProxyType({a.name: ActionConfig.from_row(a) for a in actions}),
    )
