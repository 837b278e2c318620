"""Configuration changes, told to every process: PostgreSQL ``NOTIFY`` out, ``LISTEN`` in.

Every admin write (the admin API and the CLI, both through ``service.admin``)
calls ``announce`` in its own transaction, so the notification naming the
client is sent when, and only if, the change commits. Every service process
keeps one dedicated connection listening (``ChangeListener``, owned by the
PostgreSQL store) and drops the client from its registry cache when told.

A listener that loses its connection (the database restarted, a network
cut, a connection that stopped answering its ping) reconnects with backoff,
and then forgets the whole cache, since notifications sent meanwhile were
missed. The cache lifetime (``CACHE_TTL``, at most 30 s) stays the fallback,
and is all SQLite has: there is no one to tell there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)

CHANNEL = "action_links_config"
NOTIFY = text("SELECT pg_notify(:channel, :client_id)")

PING_INTERVAL = 1.0  # seconds between checks that the listening connection still answers
PING_TIMEOUT = 1.0
FIRST_BACKOFF, LONGEST_BACKOFF = 0.1, 1.0  # between reconnection attempts

OnChange = Callable[[str | None], None]
"""Called with the client whose configuration changed, or None: maybe any client's."""


async def announce(session: AsyncSession, client_id: str) -> None:
    """Tell every process, when the session's transaction commits, that ``client_id``'s
    configuration (the client, its keys or its actions) changed."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(NOTIFY, {"channel": CHANNEL, "client_id": client_id})


Connect = Callable[[], Awaitable["asyncpg.Connection[Any]"]]


class ChangeListener:
    """One connection listening on ``CHANNEL``, kept alive, for the life of a process."""

    def __init__(self, connect: Connect, on_change: OnChange) -> None:
        self._connect = connect
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        # Checked by the loops as well as cancelling them: Python 3.11's asyncio.timeout
        # can turn a cancellation that meets its own deadline into a TimeoutError.
        self._stopping = False
        self.connected = asyncio.Event()  # set while listening (for tests and readiness)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="config-change-listener")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._stopping:
            try:
                connection = await self._connect()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.debug("change listener: cannot connect (%s)", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, LONGEST_BACKOFF)
                continue
            try:
                await self._listen(connection)
            # InternalClientError: asyncpg found its protocol busy with an operation it
            # had abandoned (seen once at a loaded shutdown); a new connection fixes it.
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ) as exc:
                log.warning(
                    "change listener lost its connection (%s); reconnecting", type(exc).__name__
                )
            finally:
                self.connected.clear()
                connection.terminate()
            if self._stopping:
                return
            backoff = FIRST_BACKOFF
            await asyncio.sleep(backoff)

    async def _listen(self, connection: asyncpg.Connection[Any]) -> None:
        """Listen until the connection is lost or stops answering."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(CHANNEL, self._notified)
        # Changes made while nobody listened were missed: forget everything once.
        self._on_change(None)
        self.connected.set()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_INTERVAL):
                    await lost.wait()
            if self._stopping:
                return
            if lost.is_set() or connection.is_closed():
                raise ConnectionError("the listening connection was closed")
            async with asyncio.timeout(PING_TIMEOUT):
                await connection.execute("SELECT 1")

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_change(payload or None)
