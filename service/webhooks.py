"""Standard Webhooks as the receiver sees them: the message, its signature, one attempt.

- ``body``: what one redemption (``store.RedemptionRecord``) tells the
  receiver. The body and the ``webhook-id`` are computed from the redemption
  alone, so every attempt by any process sends the same bytes under the same id.
- ``webhook_id``: fixed per redemption (derived from its id), so every
  attempt of one redemption carries the same id and no two redemptions share
  one, not even when a ``sync`` refusal gave a use back and another request
  took it: a receiver that deduplicates by id never drops a real redemption.
- ``sign``: the ``webhook-signature`` header (``v1,`` + base64 HMAC-SHA256 of
  ``{id}.{timestamp}.{body}``, keyed with the base64-decoded ``whsec_`` secret).
- ``attempt``: one POST, bounded in time (the whole exchange, not each read)
  and in memory (at most ``MAX_RESPONSE_BYTES`` of the answer are read),
  redirects not followed, and a verdict with a short, clear error.

No database here: the outbox (``service.outbox``) records what happened.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from functools import cache
from typing import Any

import httpx

from service import __version__
from service.store import RedemptionRecord

SECRET_PREFIX = "whsec_"
EVENT_TYPE = "link.redeemed"
USER_AGENT = f"action-links/{__version__} (Standard Webhooks)"
MAX_RESPONSE_BYTES = 4096
MAX_RETRY_AFTER = 86_400.0
MAX_CONNECTIONS = 100
REASON_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# 4xx answers that mean "not now" rather than "no".
NOT_NOW = frozenset({408, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
WEBHOOK_ID_DOMAIN = "action-links webhook-id"


def webhook_id(redemption_id: str) -> str:
    """``msg_`` + 144 bits of SHA-256 over the redemption id (unique per redemption)."""
    material = f"{WEBHOOK_ID_DOMAIN}\x00{redemption_id}".encode()
    return "msg_" + base64.urlsafe_b64encode(hashlib.sha256(material).digest()[:18]).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def iso_utc(moment: datetime) -> str:
    """``2026-11-25T16:00:00Z``: what pydantic writes for the same instant in the API."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _canonical(value: Any) -> Any:
    """The same JSON value with object keys sorted, whatever order the database kept."""
    return json.loads(json.dumps(value, sort_keys=True))


def message_id(redemption: RedemptionRecord) -> str:
    """The ``webhook-id`` of a redemption's message."""
    return webhook_id(redemption.redemption_id)


def body(redemption: RedemptionRecord) -> bytes:
    """The message reporting one redemption, the same bytes on every attempt."""
    redeemed_at = iso_utc(redemption.redeemed_at)
    envelope = {
        "type": EVENT_TYPE,
        "timestamp": redeemed_at,
        "data": {
            "redemption_id": redemption.redemption_id,
            "link_id": redemption.link_id,
            "action": redemption.action,
            "subject": redemption.subject,
            "data": _canonical(redemption.data),
            "use": redemption.use,
            "max_uses": redemption.max_uses,
            "redeemed_at": redeemed_at,
        },
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


# ``Attempt.kind``: the outcome label of the attempt metrics.
ATTEMPT_KINDS = ("delivered", "rejected", "failed", "timeout", "unreachable")


class Verdict(StrEnum):
    DELIVERED = "delivered"  # 2xx
    REJECTED = "rejected"  # 4xx other than 408/429: the receiver said no
    UNAVAILABLE = "unavailable"  # anything else: 3xx, 5xx, 408, 429, timeout, no connection


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt went. ``error`` is what ``deliveries.last_error`` shows."""

    verdict: Verdict
    error: str | None = None
    status: int | None = None
    reason: str | None = None  # the receiver's JSON ``error`` code, when it refused
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.verdict is Verdict.DELIVERED

    @property
    def kind(self) -> str:
        """The metrics label: delivered, rejected, failed (another answer), timeout, unreachable."""
        if self.verdict is not Verdict.UNAVAILABLE:
            return self.verdict.value
        if self.status is not None:
            return "failed"
        return "timeout" if (self.error or "").startswith("timeout") else "unreachable"


@cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification (its CA bundle, SSL_CERT_FILE/DIR), loaded once per
    process: reading the CA bundle is a quarter of an app's start-up."""
    return httpx.create_ssl_context()


def new_http_client(timeout: float) -> httpx.AsyncClient:
    """The one client a process delivers with (owned by the app's lifespan)."""
    return httpx.AsyncClient(
        verify=_tls_context(),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=20),
        headers={"user-agent": USER_AGENT},
    )


def headers_for(
    redemption: RedemptionRecord, secret: str, content: bytes, timestamp: int
) -> dict[str, str]:
    msg_id = message_id(redemption)
    return {
        "content-type": "application/json",
        "accept-encoding": "identity",  # never inflate an answer we only skim
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, content),
    }


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


def refusal_reason(body: bytes) -> str | None:
    """The ``error`` string of a JSON answer, when it is a short, plain code."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    reason = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(reason, str) and REASON_PATTERN.fullmatch(reason):
        return reason
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait, from delta-seconds or an HTTP date; None when absent or nonsense."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


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
