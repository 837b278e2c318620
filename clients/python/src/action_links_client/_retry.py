"""When a call is tried again, and after how long.

Only calls whose repetition changes nothing are repeated (``Call.idempotent``):
reading a status, an inspection or the audit log, revoking one link,
redelivering a webhook (the receiver deduplicates on its fixed
``webhook-id``). Minting (a second link), exchanging a code, typing a code
(a second use), asking for a resend (a second link) and revoking a subject
(a repeat moves the cut-off later, revoking links minted in between) are
never repeated: their errors reach the caller at once.

A repeat waits an exponential backoff with jitter, and at least the
server's ``Retry-After``; a ``Retry-After`` longer than ``max_retry_after``
is not waited out inside the call: the error is raised with ``retry_after``
set, for the caller to schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

# No answer for one of these reasons may be temporary; a malformed URL or an
# unsupported scheme is not.
TRANSIENT_TRANSPORT_ERRORS = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
TRANSIENT_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls are repeated on 429, 503 and connection failures.

    ``attempts`` counts the first try (1 turns retries off); the n-th retry
    waits between half and all of ``backoff * 2**(n-1)`` seconds, at most
    ``max_backoff``, and never less than the answer's ``Retry-After``.
    """

    attempts: int = 3
    backoff: float = 0.25
    max_backoff: float = 5.0
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts counts the first try: at least 1")

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up now."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        backoff = random.uniform(ceiling / 2, ceiling)
        return max(backoff, retry_after or 0.0)
