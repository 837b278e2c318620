"""Refuses a NUL character in a request's path or query before any router sees it.

No id, name, subject or token can contain U+0000 and PostgreSQL text cannot
hold it, so such a value would only travel as far as the database and come
back as a 500. Bodies are checked by the schemas; URLs are checked here,
once for every route: a 400 page under ``/r/``, problem details elsewhere.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problem_json import problem
from service.pages import error_page


class NulInUrlMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            response: Response
            if scope["path"].startswith("/r/"):
                response = error_page(scope, "invalid")
            else:
                response = problem(
                    400, "bad_request", "Bad request", "NUL characters are not allowed in URLs"
                )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
