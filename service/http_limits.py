"""The HTTP/1.1 protocol ``serve`` runs: uvicorn's httptools protocol plus the limits it lacks.

uvicorn with httptools accepts a request head of any size and takes any time
to receive it: one client streaming header lines grows a worker's memory
without bound (200 MB of headers: +210 MB RSS), and a connection that never
finishes its head is held forever. h11 has a size limit but halves the
throughput of small requests. So this subclass keeps httptools and adds:

- at most ``MAX_HEAD_BYTES`` of request line and headers (a link token is at
  most 16 KiB; the rest leaves room for cookies of a parent domain),
- at most ``MAX_HEADERS`` header lines (Apache's default),
- at most ``HEAD_TIMEOUT`` seconds to receive a request head, measured from
  the connection or from the first byte of a request after the previous one.

A request over a limit is answered 431 (or 414 for its URL) and the
connection is closed; a head too slow is closed without an answer. Idle
keep-alive connections are uvicorn's ``timeout_keep_alive``; bodies are
bounded by ``api.problems.BodyLimitMiddleware``.

When a response is sent before the request's body has arrived (a 413 for
100 MB), closing at once would make the kernel reset the connection and the
client lose the answer. So the rest of the body is read and dropped; if it
goes on for more than ``LINGER_BYTES`` or ``LINGER_SECONDS`` the connection
is closed (a "lingering close", as Apache and nginx do), by which time the
answer has long arrived.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT = 15.0
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 2.0

_REASONS = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class RequestHeadRefused(Exception):
    """Raised from a parser callback; httptools turns it into a parser error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _head_timer: TimerHandle | None = None
    _linger_timer: TimerHandle | None = None
    _dropped = 0
    _head_bytes = 0
    _header_count = 0
    _refusal: tuple[int, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_lingering()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._header_count = 0
        self._start_head_timer()
        self._stop_lingering()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(414, "URI too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._header_count > MAX_HEADERS:
            self._refuse(431, f"more than {MAX_HEADERS} header fields")
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, f"request head over {MAX_HEAD_BYTES // 1024} KiB")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and self.cycle.response_complete:
            self._dropped += len(body)  # answered already: read and drop
            if self._dropped > LINGER_BYTES:
                self._close()
            return
        super().on_body(body)

    def on_response_complete(self) -> None:
        body_still_coming = self.cycle is not None and self.cycle.more_body
        super().on_response_complete()
        if body_still_coming and not self.transport.is_closing():
            # Drop what still comes in; close if it goes on too long. A body
            # that ends in time leaves the connection usable for the next request.
            self._dropped = 0
            self._linger_timer = self.loop.call_later(LINGER_SECONDS, self._close)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; ours says which limit was hit."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        status, detail = self._refusal
        body = detail.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()

    def _refuse(self, status: int, detail: str) -> None:
        self._refusal = (status, detail)
        raise RequestHeadRefused(detail)

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._close()

    def _stop_lingering(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
