"""``GET /r/{token}`` straight to the gate, past FastAPI's router and dependency machinery.

Following a link is the request the service exists for, and the one a burst
of mail brings by the thousand. Through FastAPI it crossed three more
middleware, a scan of every route's pattern, dependency resolution and the
exception-handler wrappers, which together cost about as much CPU as the
redemption itself (bench/README.md, "Profiling").

This middleware sits inside the access log, the NUL guard and the body limit,
so a link request is logged, counted and checked exactly as before, and
answers it with the same functions as the FastAPI route it stands in front
of (``service.api.redirect``). That route stays: it is what the OpenAPI
document describes, and HEAD and POST still go through it.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import unavailable_page
from service.api.redirect import LINK_ROUTE, answer, counted
from service.db import is_unavailable
from service.state import AppState

PREFIX = "/r/"


class LinkFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(PREFIX)
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = LINK_ROUTE  # the access log and metrics name the route template
        state: AppState = scope["app"].state.services
        response: Response
        try:
            result = await state.gate.open(scope["path"][len(PREFIX) :])
        except Exception as exc:
            if not is_unavailable(exc):
                raise  # a bug: answered 500 and logged, as on every other route
            response = unavailable_page(exc)
        else:
            response = answer(counted(result))
        await response(scope, receive, send)
