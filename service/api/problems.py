"""How errors are rendered: problem+json for machines, HTML pages for people.

Also the request-body limit, enforced before a body is read whole.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from service.api.problem_json import HTTP_CODES, problem, refusal
from service.api.routes import matches
from service.errors import ApiError, DatabaseUnavailable, RateLimited
from service.pages import error_page, pages_of

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
RETRY_AFTER_SECONDS = "5"


def is_link_path(request: Request) -> bool:
    return request.url.path.startswith("/r/")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 503:
        headers = {"Retry-After": RETRY_AFTER_SECONDS}
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    return problem(exc.status, exc.code, exc.title, exc.detail, headers, **exc.extra)


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in errors
    ]


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if is_link_path(request):
        return error_page(request.scope, "invalid")
    errors = _clean_errors(exc.errors())
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
    return problem(
        422, "validation_error", "Invalid request", f"invalid fields: {fields}", errors=errors
    )


def allowed_methods(request: Request) -> str:
    """Every method some route answers at this path, for a 405's ``Allow``.

    Starlette names only the methods of the first route whose path matched;
    ``/v1/links/{link_id}`` is two routes (GET and DELETE), and ``Allow``
    must list what the resource supports (RFC 9110).
    """
    methods: set[str] = set()
    for _, route in matches(request.scope):
        methods.update(route.methods or ())
    return ", ".join(sorted(methods))


_LINK_PAGES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    if is_link_path(request):
        return error_page(request.scope, _LINK_PAGES.get(exc.status_code, "invalid"), headers)
    code, title = HTTP_CODES.get(exc.status_code, ("error", "Error"))
    return problem(exc.status_code, code, title, str(exc.detail), headers)


def unavailable_page(scope: Scope, exc: DatabaseUnavailable) -> Response:
    """The 503 page for a person whose link met an unreachable database."""
    log.warning("database unavailable: %s", exc.cause_name)
    return error_page(scope, "unavailable", {"Retry-After": RETRY_AFTER_SECONDS})


async def _unavailable(request: Request, exc: Exception) -> Response:
    """A page for people on a link's path, a problem for machines everywhere else."""
    assert isinstance(exc, DatabaseUnavailable)
    if is_link_path(request):
        return unavailable_page(request.scope, exc)
    log.warning("database unavailable: %s", exc.cause_name)
    return await _api_error(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DatabaseUnavailable, _unavailable)


def body_limit(scope: Scope, limit: int = MAX_BODY_BYTES) -> Response | BodyWatch | None:
    """The request body's limit (``service.api.front`` calls it for every request).

    A refusal when the declared ``Content-Length`` is not a number (400) or over
    ``limit`` (413); None for a request without a body; otherwise a ``BodyWatch``
    whose ``receive`` and ``send`` the app must be called with.
    """
    declared: bytes | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = value
        elif name == b"transfer-encoding":
            chunked = True
    if declared is not None:
        if not declared.isdigit():
            return _refusal(scope, 400, "invalid Content-Length")
        if int(declared) > limit:
            return _refusal(scope, 413, OVER_LIMIT)
    if not chunked and not (declared and int(declared)):
        # Without Transfer-Encoding the body is at most the declared length (none
        # declared: no body, RFC 9112 6.3), so only chunked bodies need counting.
        return None
    return BodyWatch(scope, limit)


OVER_LIMIT = "request body over 1 MiB"


def _refusal(scope: Scope, status: int, detail: str) -> Response:
    return refusal(pages_of(scope), scope["path"], scope["headers"], status, detail)


class BodyWatch:
    """A request body on its way in: 413 once it grows over the limit while read.

    Any answer sent before the request's body was read whole (a 413, or a 404
    that never looked at it) says ``Connection: close``: the bytes still to
    come are no request, and the server reads and drops some of them before
    closing (service/http_limits.py) so that the client does get the answer.
    Call the app with ``watch.receive(receive)`` and ``watch.send(send)``'s
    wrappers (``wrap``); if the app raises after a 413 was sent (``refused``),
    that is the 413's doing, not an error.
    """

    __slots__ = (
        "_receive",
        "_scope",
        "_send",
        "limit",
        "read_whole",
        "received",
        "refused",
        "started",
    )

    def __init__(self, scope: Scope, limit: int) -> None:
        self._scope = scope
        self.limit = limit
        self.received = 0
        self.read_whole = self.started = self.refused = False

    def wrap(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        self._receive, self._send = receive, send
        return self.receive, self.send

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.read_whole = not message.get("more_body", False)
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                if not self.started:
                    self.refused = True
                    answer = _refusal(self._scope, 413, OVER_LIMIT)
                    await answer(self._scope, self._receive, self._send)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the 413 has been sent; the app's answer goes nowhere
        if message["type"] == "http.response.start":
            self.started = True
            if not self.read_whole:
                message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
        await self._send(message)
