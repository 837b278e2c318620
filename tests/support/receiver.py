"""A real webhook receiver for tests: a small ASGI app under uvicorn on 127.0.0.1.

It runs in a thread with its own event loop, so in-process apps and service
processes reach it the same way, over TCP. Tests script its answers (status,
JSON body, headers, delays, endless or dripping bodies), take it down (the
port then refuses connections) and bring it back up on the same port, and
read every request it received. ``Received.verify`` checks a signature with
the ``standardwebhooks`` package, the library a real receiver would use.

``RawReceiver`` answers with bytes that are not HTTP at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook

from tests.support.processes import free_port

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """What the receiver answers to one request."""

    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the status line; 3600 = never answers
    # Then, if given, until the test sets it (at most 30 s): "answer once X happened".
    until: threading.Event | None = None
    body_size: int = 0  # bytes of filler body, streamed in 64 KiB chunks
    drip: float = 0.0  # seconds between single body bytes (a slow body)


NEVER = 3600.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answer: Answer | None = None

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> Any:
        """The parsed payload, if the signature is valid for ``secret`` (else raises)."""
        return Webhook(secret).verify(self.body, self.headers)


# Decides the answer from the request and how many earlier requests had its webhook-id.
Script = Callable[[Received, int], Answer]


def always(answer: Answer) -> Script:
    return lambda _request, _seen: answer


class Receiver:
    def __init__(self, shutdown_grace: int = 1) -> None:
        """``shutdown_grace``: whole seconds ``down()`` lets requests in flight finish
        (one answering ``NEVER`` holds it that long); 0: about 0.1 s."""
        self.port = free_port()
        self.shutdown_grace = shutdown_grace
        self.script: Script = always(Answer())
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def answer(self, answer: Answer) -> None:
        self.script = always(answer)

    def reset(self) -> Receiver:
        """As new for the next test: up, answering 200, nothing received (one receiver
        can serve a whole module: starting and stopping one costs ~0.2 s)."""
        with self._lock:
            self._received.clear()
        self.script = always(Answer())
        if self._server is None:
            self.up()
        return self

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def for_id(self, webhook_id: str) -> list[Received]:
        return [r for r in self.received if r.webhook_id == webhook_id]

    async def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """The requests received, once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            received = self.received
            if len(received) >= count:
                return received
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {count} requests, got {len(self.received)}")

    # --- up and down -----------------------------------------------------------

    def up(self) -> Receiver:
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            http="h11",
            interface="asgi3",
            ws="none",
            lifespan="off",
            log_level="error",
            access_log=False,
            timeout_graceful_shutdown=self.shutdown_grace,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=asyncio.run, args=(self._server.serve(),))
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"receiver did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def down(self) -> None:
        """Stop listening: connections are refused until ``up()``."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._server = None
        self._thread = None

    # --- the ASGI app --------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Callable[[], Any], send: Any) -> None:
        assert scope["type"] == "http"
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender gave up mid-request: no real receiver would act on it
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request = Received(scope["path"], headers, bytes(body), time.time())
        with self._lock:
            seen = sum(
                1
                for r in self._received
                if r.headers.get("webhook-id") == headers.get("webhook-id")
            )
            self._received.append(request)
        answer = self.script(request, seen)
        request.answer = answer
        await asyncio.sleep(answer.delay)
        if answer.until is not None:
            deadline = time.monotonic() + 30
            # Polled: a thread's event, and a wait that must end when the server stops.
            while not answer.until.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        await _respond(answer, send)


async def _respond(answer: Answer, send: Any) -> None:
    content = b"" if answer.json is None else json.dumps(answer.json).encode()
    size = len(content) + answer.body_size + (8 if answer.drip else 0)
    headers = [(b"content-length", str(size).encode())]
    headers += [(k.encode(), v.encode()) for k, v in answer.headers.items()]
    if answer.json is not None:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": content, "more_body": True})
    remaining = answer.body_size
    chunk = b"x" * 65536
    while remaining > 0:
        piece = chunk[: min(remaining, len(chunk))]
        remaining -= len(piece)
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    if answer.drip:
        for _ in range(8):
            await asyncio.sleep(answer.drip)
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class RawReceiver:
    """A TCP server that reads a whole request and answers ``reply`` (not HTTP).

    The whole request, body too: closing with unread bytes makes the kernel
    reset the connection, and a "silent close" would then read as a reset.
    """

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def up(self) -> RawReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def down(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(_read_request(reader), 2)
            writer.write(self.reply)
            await writer.drain()
        writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 request with a ``Content-Length`` body (what the webhook client sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head + await reader.readexactly(length)
