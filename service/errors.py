"""Domain errors of the JSON API. Each knows its problem ``code`` and HTTP status.

    ApiError
    ├── Unauthorized          401 unauthorized
    ├── NotFound              404 not_found
    ├── Conflict              409 conflict
    ├── PayloadTooLarge       413 payload_too_large
    ├── UnprocessableError    422
    │   ├── UnknownAction         unknown_action
    │   ├── RedirectNotAllowed    redirect_not_allowed
    │   ├── TtlTooLong            ttl_too_long
    │   └── ValidationFailed      validation_error (with ``errors``)
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
