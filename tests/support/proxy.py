"""A small TCP proxy of our own, to cut the service off from PostgreSQL on demand.

It runs its own event loop in a thread, so it works the same for in-process
apps and for service processes. The faults:

- ``reset()``: every open connection is reset; new ones are accepted.
- ``stall()``: nothing is forwarded any more, in either direction, on open
  or new connections, until ``restore()``: statements hang mid-flight.
- ``refuse_new()``: the listener closes (new connections are refused);
  open connections keep working.
- ``cut()``: both of the last two: refuse new connections, reset open ones.
- ``restore()``: listen again on the same port and forward everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest


class TcpProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._call(self._close())

    def reset(self) -> None:
        """Reset every open connection; new ones still go through."""
        self._call(self._reset())

    def stall(self) -> None:
        """Stop forwarding bytes (open and new connections) until ``restore()``."""
        self._call(self._set_flowing(False))

    def refuse_new(self) -> None:
        """Close the listener; open connections keep working."""
        self._call(self._stop_listening())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def url_for(self, database_url: str) -> str:
        """``database_url`` rewritten to go through this proxy."""
        prefix, _, rest = database_url.partition("@")
        _, _, database = rest.partition("/")
        return f"{prefix}@127.0.0.1:{self.port}/{database}"

    async def _set_flowing(self, flowing: bool) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _listen(self) -> None:
        await self._set_flowing(True)
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _reset(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _close(self) -> None:
        await self._stop_listening()
        await self._reset()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        assert self._flowing is not None
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        if writer not in self._writers:  # reset while it waited
            up_writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


@pytest.fixture(scope="module", name="proxy")
def module_proxy() -> Iterator[TcpProxy]:
    """One proxy for a module whose shared service reaches PostgreSQL through it."""
    proxy = TcpProxy().start()
    yield proxy
    proxy.close()
