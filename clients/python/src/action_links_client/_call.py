"""One API call as data: what to send, how to read the answer, whether it may be repeated.

Both clients send the same ``Call`` for an operation and differ only in how
they wait (``Client`` blocks, ``AsyncClient`` awaits). The request shapes
(``_operations``), the reading of answers, the error mapping and the retry
decision (``settle``) therefore exist once, without I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from action_links_client._errors import (
    ActionLinksError,
    error_from_response,
    error_from_transport,
    unexpected_answer,
)
from action_links_client._retry import (
    TRANSIENT_STATUSES,
    TRANSIENT_TRANSPORT_ERRORS,
    RetryPolicy,
)
from action_links_client._version import __version__

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """A request and the reader of its 2xx body (the decoded JSON, None when empty)."""

    method: str
    path: str
    read: Callable[[Any], T]
    body: Mapping[str, Any] | None = field(default=None, repr=False)  # may hold a token or code
    params: Mapping[str, str] | None = None
    idempotent: bool = False

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return http.build_request(self.method, self.path, json=self.body, params=self.params)

    def parse(self, response: httpx.Response) -> T:
        try:
            return self.read(response.json() if response.content else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise unexpected_answer(response, exc) from exc


@dataclass(frozen=True)
class Wait:
    """Try the call again after this many seconds."""

    seconds: float


def settle(
    call: Call[T],
    outcome: httpx.Response | httpx.TransportError,
    attempt: int,
    retry: RetryPolicy,
) -> T | Wait:
    """The result of attempt number ``attempt``, a ``Wait`` before the next, or the error."""
    error: ActionLinksError
    if isinstance(outcome, httpx.TransportError):
        error = error_from_transport(outcome)
        transient = isinstance(outcome, TRANSIENT_TRANSPORT_ERRORS)
    elif outcome.is_success:
        return call.parse(outcome)
    else:
        error = error_from_response(outcome)
        transient = outcome.status_code in TRANSIENT_STATUSES
    delay = retry.delay(attempt, error.retry_after) if call.idempotent and transient else None
    if delay is None:
        raise error
    return Wait(delay)


def http_options(base_url: str, api_key: str, timeout: float) -> dict[str, Any]:
    """What both clients give their httpx client: where, who, how long; no redirects."""
    return {
        "base_url": base_url,
        "headers": {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": f"action-links-client/{__version__} httpx/{httpx.__version__}",
        },
        "timeout": httpx.Timeout(timeout),
        "follow_redirects": False,
    }
