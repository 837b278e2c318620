"""``GET /r/{token}`` straight to the gate, past FastAPI's router and dependency machinery.

Following a link is the request the service exists for, and the one a burst
of mail brings by the thousand. Through FastAPI it crossed three more
middleware, a scan of every route's pattern, dependency resolution and the
exception-handler wrappers, which together cost about as much CPU as the
redemption itself (bench/README.md, "Profiling").

``service.api.front`` calls it after the access log, the NUL guard and the
body limit, so a link request is logged, counted and checked exactly as
before; it answers with the same function as the FastAPI route it stands in front
of (``redirect.open_answer``, the 503 page included). That route stays: it is
what the OpenAPI document describes, and HEAD and POST still go through it.
"""

from __future__ import annotations

from starlette.routing import compile_path
from starlette.types import Receive, Scope, Send

from service.api.redirect import LINK_PATH, LINK_ROUTE, open_answer
from service.state import AppState

# The route's own pattern, so the fast path takes exactly the requests the route
# would (a path with a line break, for one, is no link: the router answers 404).
LINK_PATTERN = compile_path(LINK_PATH)[0]


def link_token(scope: Scope) -> str | None:
    """The token of a request the fast path answers (``GET /r/{token}``), None for others."""
    if scope["method"] != "GET" or scope.get("root_path"):
        return None
    matched = LINK_PATTERN.match(scope["path"])
    return None if matched is None else matched["token"]


async def answer_link(scope: Scope, token: str, receive: Receive, send: Send) -> None:
    """What the route would answer, with the same function."""
    scope["route"] = LINK_ROUTE  # the access log and metrics name the route template
    state: AppState = scope["app"].state.services
    response = await open_answer(state.gate, token, scope)
    await response(scope, receive, send)
