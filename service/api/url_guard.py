"""Refuses a NUL character in a request's path or query before any router sees it.

No id, name, subject or token can contain U+0000 and PostgreSQL text cannot
hold it, so such a value would only travel as far as the database and come
back as a 500. Bodies are checked by the schemas; URLs are checked here,
once for every route (``service.api.front``): a 400 page under ``/r/``, problem
details elsewhere.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

from service.api.problem_json import problem
from service.pages import error_page


def nul_refusal(scope: Scope) -> Response | None:
    """The 400 for a request whose path or query holds a NUL, None for any other."""
    if "\x00" not in scope["path"] and b"%00" not in scope.get("query_string", b""):
        return None
    if scope["path"].startswith("/r/"):
        return error_page(scope, "invalid")
    return problem(400, "bad_request", "Bad request", "NUL characters are not allowed in URLs")
