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
- ``WebhookClient.attempt`` (``service.webhook_http``, imported then): one
  POST, bounded in time (the whole exchange, not each read) and in memory (at
  most ``MAX_RESPONSE_BYTES`` of the answer are read), redirects not followed,
  and a verdict with a short, clear error.

No database here: the outbox (``service.outbox``) records what happened.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from service import __version__
from service.store import RedemptionRecord

if TYPE_CHECKING:
    import httpx

SECRET_PREFIX = "whsec_"
EVENT_TYPE = "link.redeemed"
USER_AGENT = f"action-links/{__version__} (Standard Webhooks)"
MAX_RESPONSE_BYTES = 4096
MAX_RETRY_AFTER = 86_400.0
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


class WebhookClient:
    """How a process sends webhooks: one HTTP client, made for the first attempt (owned
    by the app's lifespan, or by ``action-links dispatcher``).

    The HTTP side (``service.webhook_http``: httpx, and its TLS context with the CA
    bundle parsed by OpenSSL) is ~4 MB of resident memory and ~150 ms to load: a
    process that never sends a webhook pays neither, and the first attempt of one
    that does pays them once (bench/README.md, "Memory per worker").
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def attempt(
        self,
        url: str,
        secret: str,
        redemption: RedemptionRecord,
        timeout: float,  # noqa: ASYNC109 - passed on: one deadline over the whole exchange
        trace_headers: Mapping[str, str] | None = None,
    ) -> Attempt:
        """One attempt (``webhook_http.attempt``)."""
        from service import webhook_http

        if self._client is None:
            self._client = webhook_http.new_http_client(self.timeout)
        return await webhook_http.attempt(
            self._client, url, secret, redemption, timeout, trace_headers
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
