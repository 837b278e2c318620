"""Domain errors of the JSON API. Each knows its problem ``code`` and HTTP status.

    ApiError
    ├── Unauthorized          401 unauthorized
    ├── NotFound              404 not_found
    ├── Conflict              409 conflict
    ├── CodeUsed              409 code_used
    ├── CodeExpired           410 code_expired
    ├── ResendExpired         410 resend_expired
    ├── PayloadTooLarge       413 payload_too_large
    ├── UnprocessableError    422
    │   ├── UnknownAction         unknown_action
    │   ├── RedirectNotAllowed    redirect_not_allowed
    │   ├── TtlTooLong            ttl_too_long
    │   ├── CodeNotEnabled        code_not_enabled
    │   ├── WrongCode             wrong_code (with ``attempts_left``)
    │   └── ValidationFailed      validation_error (with ``errors``)
    ├── CodeLocked            429 code_locked
    ├── LinkRefused           403/409/410/503, the redirect's ``error`` word as code
    ├── RateLimited           429 rate_limited (with ``Retry-After``)
    └── DatabaseUnavailable   503 unavailable

One handler in ``api.problems`` renders them as RFC 9457 problem details
(``DatabaseUnavailable`` on a link's path as the 503 page people see). A
class's docstring is what the OpenAPI document says its code means
(``api.openapi``): its first paragraph, one sentence a caller can act on.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class Unauthorized(ApiError):
    """No credential, or a wrong one: `Authorization: Bearer <API key or admin token>`."""

    status, code, title = 401, "unauthorized", "Unauthorized"


class NotFound(ApiError):
    """No such thing, or not this caller's (another client's ids answer the same)."""

    status, code, title = 404, "not_found", "Not found"


class Conflict(ApiError):
    """The request conflicts with what exists (an id taken, a redemption without webhooks)."""

    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ApiError):
    """The body is over 1 MiB, or a link's `data` is over 4096 bytes serialized."""

    status, code, title = 413, "payload_too_large", "Payload too large"


class UnprocessableError(ApiError):
    status = 422


class UnknownAction(UnprocessableError):
    """The client has no action of that name."""

    code, title = "unknown_action", "Unknown action"


class RedirectNotAllowed(UnprocessableError):
    """A redirect URL is not within the client's `allowed_redirects`."""

    code, title = "redirect_not_allowed", "Redirect not allowed"


class TtlTooLong(UnprocessableError):
    """`expires_in` is longer than the action's `max_ttl`."""

    code, title = "ttl_too_long", "Lifetime too long"


class ValidationFailed(UnprocessableError):
    """The request does not validate; `errors` names each field and what is wrong."""

    code, title = "validation_error", "Invalid request"

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail, errors=errors)


class CodeUsed(ApiError):
    """The code was exchanged already: a code is good for one exchange."""

    status, code, title = 409, "code_used", "Code already exchanged"


class CodeExpired(ApiError):
    """The code is older than 300 s (counted from the redemption)."""

    status, code, title = 410, "code_expired", "Code expired"


class ResendExpired(ApiError):
    """The resend hint is older than 7 days: ask the person to start again."""

    status, code, title = 410, "resend_expired", "Resend hint expired"


class CodeNotEnabled(UnprocessableError):
    """The link was minted without a typed code."""

    code, title = "code_not_enabled", "Link has no typed code"


class WrongCode(UnprocessableError):
    """Not the link's typed code; `attempts_left` says how many more may be tried."""

    code, title = "wrong_code", "Wrong code"

    def __init__(self, detail: str, attempts_left: int) -> None:
        super().__init__(detail, attempts_left=attempts_left)


class CodeLocked(ApiError):
    """Five wrong codes were entered for this link: its typed code is locked (its URL
    still works)."""

    status, code, title = 429, "code_locked", "Code locked"


class LinkRefused(ApiError):
    """A typed code that was right, for a link that cannot be redeemed (``service.typed_code``).

    Its status and ``code`` depend on why: the same word the link's redirect
    would carry in ``error=``.
    """

    def __init__(self, status: int, code: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.status, self.code, self.title = status, code, title


class RateLimited(ApiError):
    """Too many failed authentications from this address, or too many links minted with
    this API key: wait `Retry-After` seconds.

    Raised by ``service.rate_limits``; ``retry_after`` is those seconds.
    """

    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DatabaseUnavailable(ApiError):
    """The database cannot be reached or dropped the connection; worth trying again shortly.

    Raised only at the storage boundary (``service.store``), in place of the
    driver's error, which it keeps as ``__cause__``.
    """

    status, code, title = 503, "unavailable", "Service unavailable"

    def __init__(self, detail: str = "the database cannot be reached; try again shortly") -> None:
        super().__init__(detail)

    @property
    def cause_name(self) -> str:
        """What the driver raised, for a log line (never its message: it may quote values)."""
        return type(self.__cause__).__name__ if self.__cause__ is not None else "no answer"
