"""Refusals of the protocol itself (413, 414, 431, 400) against a real ``serve`` process.

Found by an attack on the service (and fixed): a 413 for a 1.6 MB or 2.2 MB
body left a keep-alive connection that the server then closed, without
saying ``Connection: close``, so the client's next request on it failed (6
of 8 tries); and under ``/r/`` the 413, 414 and 431 lacked the link headers,
the 413 being JSON where people get pages.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.http_limits import LINGER_SECONDS, MAX_HEAD_BYTES, MAX_HEADERS
from service.pages import LINK_HEADERS
from tests.support.processes import ServiceProcess, running_service
from tests.support.served import provision_shop, service_env

pytestmark = pytest.mark.slow

MB = 1_000_000


@pytest.fixture(scope="module")
def service(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """One process for the module: every test talks to it on connections of its own, and
    only the keep-alive test needs data (it empties the database first: ``database_url``)."""
    log_dir = tmp_path_factory.mktemp("refusals")
    with running_service(service_env(postgres_url, 2), log_dir) as process:
        yield process


def port_of(service: ServiceProcess) -> int:
    return int(service.base_url.rsplit(":", 1)[1])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server ended the connection after answering

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


def exchange(port: int, head: bytes, body: bytes = b"") -> Answer:
    """One request on a fresh connection: the answer, and whether the server then closed.

    The body is sent whole, as ordinary clients do, even once the server has
    answered; a send that fails because the server stopped reading is ignored,
    and what it answered is still read.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for start in range(0, len(body), 65536):
                sock.sendall(body[start : start + 65536])
        except OSError:
            pass
        received = bytearray()
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"closed without a complete answer: {bytes(received)!r}"
            received += chunk
        head_bytes, _, rest = bytes(received).partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        content = bytearray(rest)
        while len(content) < length:
            chunk = sock.recv(65536)
            assert chunk, "closed in the middle of the answer"
            content += chunk
        sock.settimeout(LINGER_SECONDS + 3)
        try:
            closed = sock.recv(65536) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
    return Answer(int(status_line.split()[1]), headers, bytes(content), closed)


def post_head(path: str, length: int, **extra: str) -> bytes:
    fields = "".join(f"{name}: {value}\r\n" for name, value in extra.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{fields}\r\n"
    ).encode()


def assert_link_page(answer: Answer, status: int) -> None:
    assert answer.status == status
    assert answer.header("content-type").startswith("text/html"), answer.headers
    for name, value in LINK_HEADERS.items():
        assert answer.header(name.lower()) == value, name
    assert "default-src 'none'" in answer.header("content-security-policy")
    assert b"<html" in answer.body.lower()
    assert_closes(answer)


def assert_problem(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status
    assert answer.header("content-type") == "application/problem+json"
    assert f'"code": "{code}"'.encode() in answer.body
    assert_closes(answer)


def assert_closes(answer: Answer) -> None:
    assert answer.header("connection") == "close", answer.headers
    assert answer.closed, "the server said close, but kept the connection open"


def test_a_413_on_a_keep_alive_connection_says_close(
    service: ServiceProcess, database_url: str
) -> None:
    """A client reusing connections (httpx, one at a time) gets every answer."""
    headers = asyncio.run(provision(service.base_url))
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    outcomes: list[object] = []
    with httpx.Client(base_url=service.base_url, limits=limits, timeout=30) as http:
        for attempt in range(8):
            size = (1_600_000, 2_200_000)[attempt % 2]
            payload = b'{"action": "go", "data": "' + b"x" * size + b'"}'
            try:
                refused = http.post(
                    "/v1/links",
                    content=payload,
                    headers={**headers, "Content-Type": "application/json"},
                )
                outcomes.append((refused.status_code, refused.headers.get("connection")))
                minted = http.post("/v1/links", json={"action": "go"}, headers=headers)
                outcomes.append(minted.status_code)
            except httpx.TransportError as exc:
                outcomes.append(type(exc).__name__)
    assert outcomes == [(413, "close"), 201] * 8


@pytest.mark.parametrize("size", [1_600_000, 2_200_000, 12 * MB])
def test_a_413_closes_after_the_answer_arrived(service: ServiceProcess, size: int) -> None:
    """The server reads and drops the rest of the body, then closes: no reset loses the 413."""
    started = time.monotonic()
    answer = exchange(port_of(service), post_head("/v1/links", size), b"x" * size)
    assert_problem(answer, 413, "payload_too_large")
    assert time.monotonic() - started < 2 * LINGER_SECONDS + 5


def test_refusals_under_r_are_pages_with_the_link_headers(service: ServiceProcess) -> None:
    port = port_of(service)
    token = "A" * 40 + "." + "B" * 43

    too_large = exchange(port, post_head(f"/r/{token}", 2 * MB), b"x" * 2 * MB)
    assert_link_page(too_large, 413)

    long_link = f"GET /r/{'A' * (MAX_HEAD_BYTES + 10)} HTTP/1.1\r\nHost: x\r\n\r\n"
    assert_link_page(exchange(port, long_link.encode()), 414)

    many = "".join(f"X-Header-{i}: v\r\n" for i in range(MAX_HEADERS + 1))
    assert_link_page(exchange(port, f"GET /r/{token} HTTP/1.1\r\n{many}\r\n".encode()), 431)

    big = f"GET /r/{token} HTTP/1.1\r\nCookie: {'c' * MAX_HEAD_BYTES}\r\n\r\n"
    assert_link_page(exchange(port, big.encode()), 431)

    invalid_length = f"POST /r/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n"
    answer = exchange(port, invalid_length.encode())
    assert_link_page(answer, 400)


def test_refusals_elsewhere_are_problems(service: ServiceProcess) -> None:
    port = port_of(service)
    assert_problem(
        exchange(port, post_head("/v1/links", 2 * MB), b"x" * 2 * MB), 413, "payload_too_large"
    )
    long_path = f"GET /v1/links/{'A' * (MAX_HEAD_BYTES + 10)} HTTP/1.1\r\nHost: x\r\n\r\n"
    assert_problem(exchange(port, long_path.encode()), 414, "uri_too_long")
    many = "".join(f"X-Header-{i}: v\r\n" for i in range(MAX_HEADERS + 1))
    answer = exchange(port, f"GET /healthz HTTP/1.1\r\n{many}\r\n".encode())
    assert_problem(answer, 431, "header_fields_too_large")
    assert_problem(exchange(port, b"NOT HTTP AT ALL\r\n\r\n"), 400, "bad_request")


def test_an_answer_before_an_unread_body_says_close(service: ServiceProcess) -> None:
    """A body nobody read (here: no route takes it) ends the connection, and it says so."""
    head = b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    answer = exchange(port_of(service), head, chunk * 40)  # 2.6 MB, and no end
    assert answer.status == 404
    assert_closes(answer)


async def provision(base_url: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        return await provision_shop(http)


def test_a_slow_head_on_a_kept_alive_connection_is_timed_from_its_first_byte(
    postgres_url: str, tmp_path: Path
) -> None:
    """One head timer per connection (service/http_limits.py), set for the first request:
    the next request's head still gets ``HTTP_HEAD_TIMEOUT`` from its own first byte, not
    what was left of the first one's, and a head that never ends is still closed."""
    env = service_env(postgres_url, 2, HTTP_HEAD_TIMEOUT="1")
    with running_service(env, tmp_path) as process:
        with socket.create_connection(("127.0.0.1", port_of(process)), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(0.6)  # the first head's deadline (1 s after connecting) comes first
            head_began = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            assert sock.recv(1) == b""  # closed, without an answer
            waited = time.monotonic() - head_began
    assert 0.9 <= waited < 3
