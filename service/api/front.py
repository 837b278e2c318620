"""The one pure-ASGI middleware in front of every route, doing in turn:

1. the access log, the request id and the request histogram (``service.api.access``),
   outermost, so that it sees every answer, 400s and 413s included;
2. server spans when traced (``service.tracing``), inside the access log, which
   then logs the trace id;
3. the NUL guard: no NUL in a path or query (``service.api.url_guard``);
4. the body limit: 413 over 1 MiB, ``Connection: close`` on an answer sent before
   the body was read whole (``service.api.problems.body_limit``);
5. the ``GET /r/{token}`` fast path (``service.api.link_fast_path``);

then FastAPI. These were four middleware, each a coroutine call on every
request and two of them a wrapper around every message sent; as one they
cost a fraction (bench/README.md, issue 17). Each part stays in its own
module; this one only calls them in order. Untraced, 2. is nothing and 3.–5.
run in the same call as 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import request_context
from service.api import access
from service.api.link_fast_path import answer_link, link_token
from service.api.problems import BodyWatch, body_limit
from service.api.url_guard import nul_refusal
from service.request_context import RequestInfo


class Front:
    def __init__(
        self,
        app: ASGIApp,
        traced: Callable[[ASGIApp], ASGIApp] | None = None,
        link_fast_path: bool = True,
    ) -> None:
        """``traced``: wraps an app in server spans (``Tracing.middleware``), None when
        untraced; ``link_fast_path``: False sends links through the router (for tests
        comparing both)."""
        self.app = app
        self.link_fast_path = link_fast_path
        self.spans: ASGIApp | None = None if traced is None else traced(self.guarded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        info = RequestInfo(access.request_id_from(scope))
        id_header = (access.REQUEST_ID_HEADER, info.request_id.encode("ascii"))
        status = 500  # what the server answers if the app raises before responding

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        token = request_context.begin(info)
        try:
            if self.spans is None:
                await self.guarded(scope, receive, send_with_id)
            else:
                await self.spans(scope, receive, send_with_id)
        finally:
            access.finished(scope, info, status, time.perf_counter() - started)
            request_context.end(token)

    async def guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """3.–5. and the app, for an HTTP request."""
        watch: BodyWatch | None = None
        refused = nul_refusal(scope)
        if refused is None:
            limit = body_limit(scope)
            if isinstance(limit, BodyWatch):
                watch = limit
                receive, send = watch.wrap(receive, send)
            else:
                refused = limit
        if refused is not None:
            await refused(scope, receive, send)
            return
        token = link_token(scope) if self.link_fast_path else None
        try:
            if token is not None:
                await answer_link(scope, token, receive, send)
            else:
                await self.app(scope, receive, send)
        except Exception:
            if watch is None or not watch.refused:
                raise
