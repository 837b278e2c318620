"""Problem details (RFC 9457) as responses, and the answers that refuse a request outright.

Light to import on purpose: the HTTP protocol (``service.http_limits``)
renders its refusals with it in every worker before the app is loaded, and
a worker that takes long to start is killed by uvicorn's supervisor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.responses import Response

from service.pages import Pages
from service.pages.language import language_of

PROBLEM_JSON = "application/problem+json"

# The problem code and title of errors that come from HTTP itself, not from a use case.
HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    414: ("uri_too_long", "URI too long"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "Invalid request"),
    431: ("header_fields_too_large", "Request header fields too large"),
    503: ("unavailable", "Service unavailable"),
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "code": code}
    body["detail"] = detail
    body.update(extra)
    return Response(
        json.dumps(body, default=str), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


CLOSE = {"Connection": "close"}
_REFUSAL_PAGES = {400: "invalid", 413: "too_large", 414: "uri_too_long", 431: "header_too_large"}


def refusal(
    pages: Pages,
    path: str,
    headers: Iterable[tuple[bytes, bytes]],
    status: int,
    detail: str,
) -> Response:
    """A refusal of the request itself (400, 413, 414, 431), after which the connection closes.

    Under ``/r/`` it is a page with the link headers, in the language the
    request's headers ask for, elsewhere problem details; either way it says
    ``Connection: close``, so a client does not send its next request on a
    connection the server is about to end.
    """
    if path.startswith("/r/"):
        return pages.error(_REFUSAL_PAGES[status], language_of(headers), CLOSE)
    code, title = HTTP_CODES[status]
    return problem(status, code, title, detail, CLOSE)
