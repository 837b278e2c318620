"""The access log and the request-latency histogram: the outermost part of ``service.api.front``.

It replaces uvicorn's access log, which writes the raw request line and so
every token that arrives in a ``/r/…`` path. Here a request is identified by
its route *template* (``/r/{token:path}``, ``unmatched`` when no route's path
matched: ``service.api.routes``), never by its path or query string, plus
what the handlers noted in ``service.request_context``: client id, link id,
outcome, and the trace id when the request is traced.

Each request gets an id: the caller's ``X-Request-ID`` when it looks like an
id (1-64 characters of ``A-Z a-z 0-9 . _ : -``), otherwise a fresh random
one. It is echoed in the response's ``X-Request-ID`` and is on every log
record emitted while the request is handled.

Pure ASGI (no ``BaseHTTPMiddleware``) keeps the per-request cost to a clock
read, a histogram observation and one log line. With the JSON handler that
``serve`` configures, the line is written as that handler would write the
record (``logs.direct_json``), without building the record: a third of what
the record cost.
"""

from __future__ import annotations

import logging
import re

from starlette.types import Scope

from service import logs, metrics, random_ids
from service.api import routes
from service.logs import FIELDS
from service.request_context import RequestInfo

log = logging.getLogger("service.access")

REQUEST_ID_HEADER = b"x-request-id"
SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Probes and scrapes arrive every few seconds; they are logged at DEBUG when they succeed.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if SANE_REQUEST_ID.fullmatch(value):
                return str(value, "ascii")
            break
    return fresh_request_id()


def fresh_request_id() -> str:
    """16 random hex digits, as ``secrets.token_hex(8)`` (the same source, ``os.urandom``,
    read in batches: ``service.random_ids``)."""
    return random_ids.token_hex(8)


def finished(scope: Scope, info: RequestInfo, status: int, seconds: float) -> None:
    """The request is answered (or failed): its histogram observation and log line."""
    method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
    route = routes.template(scope)
    metrics.request_finished(method, route, status, seconds)
    if status >= 500:
        level = logging.WARNING
    elif route in QUIET_ROUTES and status < 400:
        level = logging.DEBUG
    else:
        level = logging.INFO
    if not log.isEnabledFor(level):
        return
    fields: dict[str, object] = {
        "request_id": info.request_id,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
    }
    if info.client_id is not None:
        fields["client"] = info.client_id
    if info.link_id is not None:
        fields["link_id"] = info.link_id
    if info.outcome is not None:
        fields["outcome"] = info.outcome
    if info.trace_id is not None:
        fields["trace_id"] = info.trace_id
    message = f"{method} {route} {status}"
    # With the JSON handler serving configures, the line itself (what a record would
    # become); otherwise a record, for whatever handlers there are (tests capture them).
    handler = logs.direct_json(log, level)
    if handler is not None and logs.write_line(
        handler, logs.json_line(log.name, level, message, fields)
    ):
        return
    # makeRecord + handle: what log.log() does, minus the stack walk for the caller's line.
    record = log.makeRecord(log.name, level, __file__, 0, message, (), None, extra={FIELDS: fields})
    log.handle(record)
