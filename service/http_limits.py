"""The HTTP/1.1 protocol ``serve`` runs: uvicorn's httptools protocol plus the limits it lacks.

uvicorn with httptools accepts a request head of any size and takes any time
to receive it: one client streaming header lines grows a worker's memory
without bound (200 MB of headers: +210 MB RSS), and a connection that never
finishes its head is held forever. h11 has a size limit but halves the
throughput of small requests. So this subclass keeps httptools and adds:

- at most ``MAX_HEAD_BYTES`` of request line and headers (a link token is at
  most 16 KiB; the rest leaves room for cookies of a parent domain),
- at most ``MAX_HEADERS`` header lines (Apache's default),
- at most ``HTTP_HEAD_TIMEOUT`` seconds (15 by default) to receive a request
  head, measured from the connection or from the first byte of a request after the previous one.

A request over a limit is answered 431 (or 414 for its URL), a request the
parser cannot read 400, each as ``api.problem_json.refusal`` renders it (a page
under ``/r/``, problem details elsewhere, ``Connection: close``), and the
connection is closed; a head too slow is closed without an answer. Idle
keep-alive connections are uvicorn's ``timeout_keep_alive``; bodies are
bounded by ``api.problems.body_limit``.

Closing a connection while the client is still sending (the rest of a
refused head, or of a body the answer came before: a 413 for 100 MB) would
make the kernel reset it, and the client could lose the answer. So such a
close lingers, as Apache's and nginx's do: the server's side is shut after
the answer (the client sees the end), and what still arrives is read and
dropped until the client closes too, or for at most ``LINGER_BYTES`` and
``LINGER_SECONDS``, by which time the answer has long arrived. uvicorn
closes the connection itself after any answer that says ``Connection:
close``, so the protocol hands it a transport whose ``close()`` lingers.

An answer sent before the body has arrived that does not say close (the app
should not send one; ``api.problems.BodyWatch`` adds it) keeps the connection:
the rest of the body is read and dropped within the same bounds.
"""

from __future__ import annotations

import asyncio
from asyncio import BaseProtocol, TimerHandle
from collections.abc import Iterable
from functools import cache
from typing import Any

from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.problem_json import refusal
from service.config import Settings
from service.pages import Pages

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
LINGER_BYTES = 16 * 1024 * 1024
LINGER_SECONDS = 2.0

_REASONS = {
    400: b"Bad Request",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


class RequestHeadRefused(Exception):
    """Raised from a parser callback; httptools turns it into a parser error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    lingering = False  # closing: the answer is out, what still arrives is dropped
    url = b""  # uvicorn sets it when a request begins; a refusal may come sooner
    _socket: asyncio.Transport
    _head_timer: TimerHandle | None = None
    _head_started: float | None = None  # loop time the head being received began
    _linger_timer: TimerHandle | None = None
    _dropped = 0
    _head_bytes = 0
    _header_count = 0
    _refusal: tuple[int, str] | None = None
    _unreadable = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._socket = transport
        super().connection_made(_Connection(transport, self))
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._stop_lingering()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._drop(len(data))
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._header_count = 0
        self._start_head_timer()
        self._stop_lingering()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)  # first, so that a refusal knows the path
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(414, "URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._header_count > MAX_HEADERS:
            self._refuse(431, f"more than {MAX_HEADERS} header fields")
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, f"request head over {MAX_HEAD_BYTES // 1024} KiB")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_started = None  # the timer, if still set, will find no head to time
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and self.cycle.response_complete:
            self._drop(len(body))  # answered already, and kept alive: read and drop
            return
        super().on_body(body)

    def on_response_complete(self) -> None:
        body_still_coming = self.cycle is not None and self.cycle.more_body
        super().on_response_complete()
        if body_still_coming and not self.transport.is_closing():
            # Drop what still comes in; close if it goes on too long. A body
            # that ends in time leaves the connection usable for the next request.
            self._dropped = 0
            self._linger_timer = self.loop.call_later(LINGER_SECONDS, self._close_now)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot read, or one over our limits."""
        status, detail = self._refusal or (400, "the request is not valid HTTP/1.1")
        self._unreadable = True
        path = self.url.decode("latin-1")
        answer = refusal(_pages(), path, self.headers or (), status, detail)
        self.transport.write(_raw(status, answer))
        self.transport.close()

    def close_connection(self) -> None:
        """uvicorn closes the connection: at once, or lingering while the client still sends."""
        if self.lingering or self._socket.is_closing():
            return
        if self._unreadable or (self.cycle is not None and self.cycle.more_body):
            self._linger()
        else:
            self._socket.close()

    def _linger(self) -> None:
        self.lingering = True
        self._cancel_head_timer()
        self._stop_lingering()
        self._dropped = 0
        if self._socket.can_write_eof():
            self._socket.write_eof()  # after the answer: the client sees the end
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self._close_now)

    def _drop(self, size: int) -> None:
        self._dropped += size
        if self._dropped > LINGER_BYTES:
            self._close_now()

    def _refuse(self, status: int, detail: str) -> None:
        self._refusal = (status, detail)
        raise RequestHeadRefused(detail)

    # One timer per connection rather than one per request (issue 17): a head that
    # completes leaves the timer set, and when it fires it finds no head to time (or
    # a later head, whose own deadline it then waits for).

    def _start_head_timer(self) -> None:
        if self._head_started is None:
            self._head_started = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(
                self._head_started + head_timeout(), self._head_deadline
            )

    def _cancel_head_timer(self) -> None:
        self._head_started = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._head_started is None:
            return  # no head on its way: the next one sets the timer again
        deadline = self._head_started + head_timeout()
        if self.loop.time() >= deadline:
            self._close_now()
        else:
            self._head_timer = self.loop.call_at(deadline, self._head_deadline)

    def _stop_lingering(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    def _close_now(self) -> None:
        if not self._socket.is_closing():
            self._socket.close()


@cache
def head_timeout() -> float:
    """This process's ``HTTP_HEAD_TIMEOUT`` (read once: the protocol has no app state)."""
    return Settings().http_head_timeout


@cache
def _pages() -> Pages:
    """This process's pages (``PAGES_DIR`` as the app has it), for refusals made before the
    app sees the request."""
    return Pages(Settings().pages_dir)


def _raw(status: int, response: Response) -> bytes:
    """``response`` as bytes on the wire, for answers sent before any ASGI app is involved."""
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
    fields = b"".join(b"%s: %s\r\n" % (name, value) for name, value in response.raw_headers)
    return head + fields + b"\r\n" + response.body


class _Connection(asyncio.Transport):
    """The socket's transport as uvicorn sees it: ``close()`` is the protocol's to decide."""

    def __init__(self, socket: asyncio.Transport, protocol: BoundedHttpToolsProtocol) -> None:
        super().__init__()
        self._socket = socket
        self._protocol = protocol
        # What uvicorn calls for every answer goes to the socket's own methods, not through
        # a method of this class (one Python call fewer per write: issue 17).
        self.write = socket.write  # type: ignore[method-assign]
        self.get_extra_info = socket.get_extra_info  # type: ignore[method-assign]

    def close(self) -> None:
        self._protocol.close_connection()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._socket.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._socket.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._socket.writelines(list_of_data)

    def write_eof(self) -> None:
        self._socket.write_eof()

    def can_write_eof(self) -> bool:
        return self._socket.can_write_eof()

    def abort(self) -> None:
        self._socket.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._socket.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._socket.pause_reading()

    def resume_reading(self) -> None:
        self._socket.resume_reading()

    def is_reading(self) -> bool:
        return self._socket.is_reading()

    def set_protocol(self, protocol: BaseProtocol) -> None:
        self._socket.set_protocol(protocol)

    def get_protocol(self) -> BaseProtocol:
        return self._socket.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._socket.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._socket.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._socket.set_write_buffer_limits(high, low)
