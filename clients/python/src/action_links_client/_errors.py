"""What the client raises, and how an HTTP answer becomes one of these errors.

The tree::

    ActionLinksError            a call failed; carries status, code, detail, problem
    ├── Unauthorized            401: the API key is missing, wrong, deleted or disabled
    ├── NotFound                404: no such link, redemption, code or hint for this
    │                           client, or a route this server does not have
    ├── RateLimited             429: too many attempts; wait ``retry_after`` seconds
    ├── Unavailable             503: the service cannot reach its database
    └── TransportError          no HTTP answer at all: refused, reset, timed out
                                (``status``, ``code`` and ``retry_after`` are None)

    WebhookVerificationError    a webhook whose headers, signature, timestamp or
                                body do not check out: answer it 4xx, act on nothing

Every other problem answer is a plain ``ActionLinksError``; tell them apart
by ``code`` (``unknown_action``, ``validation_error``, ``code_used``,
``wrong_code``, …) and read extra members such as ``attempts_left`` or
``errors`` from ``problem``, the whole problem+json body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class ActionLinksError(Exception):
    """A call that did not succeed.

    ``status`` is the HTTP status (None without an answer), ``code`` the
    problem's stable machine-readable code (None when the answer was not a
    problem), ``detail`` a sentence for people, ``problem`` the whole
    problem+json body (empty when there was none) and ``retry_after`` the
    seconds the server asked to wait (``Retry-After``), if it did.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code
        self.problem: dict[str, Any] = problem if problem is not None else {}
        self.retry_after = retry_after

    def __str__(self) -> str:
        label = " ".join(str(part) for part in (self.status, self.code) if part is not None)
        return f"{label}: {self.detail}" if label else self.detail


class Unauthorized(ActionLinksError):
    """401: the API key is missing, wrong, deleted, or its client is disabled."""


class NotFound(ActionLinksError):
    """404: nothing of that id for this client (another client's ids answer this too)."""


class RateLimited(ActionLinksError):
    """429: too many attempts; ``retry_after`` says how long to wait."""


class Unavailable(ActionLinksError):
    """503: the service cannot reach its database; try again after ``retry_after``."""


class TransportError(ActionLinksError):
    """No HTTP answer: the connection was refused or reset, or the call timed out."""


class WebhookVerificationError(Exception):
    """A webhook that must not be acted on: unsigned, forged, altered, stale or not an event."""


_BY_STATUS: dict[int, type[ActionLinksError]] = {
    401: Unauthorized,
    404: NotFound,
    429: RateLimited,
    503: Unavailable,
}


def error_from_response(response: httpx.Response) -> ActionLinksError:
    """The error for a non-2xx answer, problem+json or not (a proxy's HTML page)."""
    problem = _json_object(response)
    code = problem.get("code")
    detail = problem.get("detail") or problem.get("title") or response.reason_phrase
    error_type = _BY_STATUS.get(response.status_code, ActionLinksError)
    return error_type(
        str(detail) if detail else f"HTTP {response.status_code}",
        status=response.status_code,
        code=code if isinstance(code, str) else None,
        problem=problem,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def error_from_transport(exc: httpx.TransportError) -> TransportError:
    """The error for a call that got no answer; the httpx exception is its cause."""
    error = TransportError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    error.__cause__ = exc
    return error


def unexpected_answer(response: httpx.Response, reason: Exception) -> ActionLinksError:
    """A 2xx whose body is not what the contract describes (a proxy, another service)."""
    error = ActionLinksError(
        f"the answer does not follow the Action Links contract ({type(reason).__name__})",
        status=response.status_code,
    )
    error.__cause__ = reason
    return error


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _json_object(response: httpx.Response) -> dict[str, Any]:
    if "json" not in response.headers.get("content-type", ""):
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
