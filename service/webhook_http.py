"""One webhook attempt over HTTP: the client and what its answer means.

Imported by a process at its first attempt (``webhooks.WebhookClient``), not
before: httpx and the TLS context are ~4 MB of every process that loads them.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Mapping
from functools import cache

import httpx

from service.store import RedemptionRecord
from service.webhooks import (
    MAX_RESPONSE_BYTES,
    NOT_NOW,
    RETRY_AFTER_STATUSES,
    USER_AGENT,
    Attempt,
    Verdict,
    body,
    headers_for,
    parse_retry_after,
    refusal_reason,
)

MAX_CONNECTIONS = 100


@cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification (its CA bundle, SSL_CERT_FILE/DIR), loaded once per
    process: reading the CA bundle is a quarter of an app's start-up."""
    return httpx.create_ssl_context()


def new_http_client(timeout: float) -> httpx.AsyncClient:
    """A client to deliver with (a process has one, ``webhooks.WebhookClient``)."""
    return httpx.AsyncClient(
        verify=_tls_context(),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=20),
        headers={"user-agent": USER_AGENT},
    )


async def attempt(
    http: httpx.AsyncClient,
    url: str,
    secret: str,
    redemption: RedemptionRecord,
    timeout: float,  # noqa: ASYNC109 - one deadline over two phases, and it is reported
    trace_headers: Mapping[str, str] | None = None,
) -> Attempt:
    """POST the redemption's message once; the whole exchange takes at most ``timeout`` s.
    ``trace_headers``: the attempt's trace context (``traceparent``), when traced."""
    content = body(redemption)
    headers = headers_for(redemption, secret, content, int(time.time()))
    if trace_headers:
        headers.update(trace_headers)
    try:
        request = http.build_request("POST", url, content=content, headers=headers)
    except httpx.InvalidURL:
        return Attempt(Verdict.UNAVAILABLE, "invalid webhook_url")
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            response = await http.send(request, stream=True)
    except (TimeoutError, httpx.TimeoutException):
        return Attempt(Verdict.UNAVAILABLE, f"timeout after {timeout:g} s")
    except httpx.HTTPError as exc:
        return Attempt(Verdict.UNAVAILABLE, describe(exc))
    try:
        return await _judge(response, deadline)
    finally:
        await response.aclose()


async def _judge(response: httpx.Response, deadline: float) -> Attempt:
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(Verdict.DELIVERED, status=status)
    retry_after = None
    if status in RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    if 300 <= status < 400:
        error = f"HTTP {status} (redirects are not followed)"
        return Attempt(Verdict.UNAVAILABLE, error, status)
    if 400 <= status < 500 and status not in NOT_NOW:
        reason = refusal_reason(await _read_some(response, deadline))
        error = f"HTTP {status}" + (f": {reason}" if reason else "")
        return Attempt(Verdict.REJECTED, error, status, reason)
    return Attempt(Verdict.UNAVAILABLE, f"HTTP {status}", status, retry_after=retry_after)


async def _read_some(response: httpx.Response, deadline: float) -> bytes:
    """At most MAX_RESPONSE_BYTES of the body, by the deadline; what came, if it stalls."""
    received = bytearray()
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) >= MAX_RESPONSE_BYTES:
                    break
    except (TimeoutError, httpx.HTTPError):
        pass
    return bytes(received[:MAX_RESPONSE_BYTES])


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first (the chain anyio wraps)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def describe(exc: httpx.HTTPError) -> str:
    """A short, secret-free ``last_error`` for a transport failure."""
    if isinstance(exc, httpx.ConnectError):
        causes = _causes(exc)
        if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
            return "connection refused"
        if any(isinstance(cause, socket.gaierror) for cause in causes):
            return "host not found"
        return "connection failed"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "invalid webhook_url"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "disconnected" in str(exc).lower():
            return "connection closed without a response"
        return "invalid HTTP response"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "connection reset"
    return f"delivery failed ({type(exc).__name__})"
