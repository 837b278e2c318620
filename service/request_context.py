"""What the access log says about the request being handled, filled in as it goes.

The access middleware (``service.api.access``) opens one ``RequestInfo`` per
HTTP request and keeps it in a context variable, so that dependencies and
routers can add what they learn (the client, the link, the outcome) without
having the request at hand, and so that every log record emitted meanwhile
carries the request id. Only identifiers and outcomes belong here: never a
token, an API key or a secret.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(slots=True)
class RequestInfo:
    request_id: str
    client_id: str | None = None
    link_id: str | None = None
    outcome: str | None = None
    trace_id: str | None = None  # set when the request is traced (``service.otel``)


_current: ContextVar[RequestInfo | None] = ContextVar("action_links_request", default=None)


def begin(info: RequestInfo) -> Token[RequestInfo | None]:
    return _current.set(info)


def end(token: Token[RequestInfo | None]) -> None:
    _current.reset(token)


def current() -> RequestInfo | None:
    return _current.get()


def annotate(
    *, client_id: str | None = None, link_id: str | None = None, outcome: str | None = None
) -> None:
    """Record what this request was about; a no-op outside a request (CLI, tests, tasks)."""
    info = _current.get()
    if info is None:
        return
    if client_id is not None:
        info.client_id = client_id
    if link_id is not None:
        info.link_id = link_id
    if outcome is not None:
        info.outcome = outcome
