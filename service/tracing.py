"""Tracing, when the operator asks for it with the standard ``OTEL_*`` variables; else nothing.

The rule (``requested``): tracing is on when ``OTEL_TRACES_EXPORTER`` names an
exporter other than ``none``, or, with that variable unset, when
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is
set; ``OTEL_SDK_DISABLED=true`` turns it off whatever else is set.

Off, the service gets ``NO_TRACING``, whose methods do nothing and cost a
call, and no module of OpenTelemetry's SDK is imported. On, the spans are made
by ``service.otel`` (the ``otel`` extra: ``pip install 'action-links[otel]'``),
imported only then; without the extra the service logs one warning and runs
untraced.

What is traced, and what never is (``service.otel`` says how):

- one server span per HTTP request, named by the route *template*
  (``GET /r/{token:path}``), never the path or the query;
- database statements as SQL text with placeholders, never their parameters;
- one client span per webhook attempt, whose context goes to the receiver in
  the W3C ``traceparent`` header.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp

log = logging.getLogger(__name__)

_NOTHING: AbstractContextManager[None] = nullcontext()


class AttemptSpan:
    """One webhook attempt as its span sees it (here: nothing to send, nothing recorded)."""

    headers: Mapping[str, str] = {}

    def finished(self, outcome: str, status: int | None) -> None:
        """The attempt's outcome (``Attempt.kind``) and the receiver's status, if it answered."""


_NO_ATTEMPT: AbstractContextManager[AttemptSpan] = nullcontext(AttemptSpan())


class Tracing:
    """No tracing: the base every call site talks to, and what it gets when tracing is off."""

    enabled = False

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """``app`` wrapped in server spans."""
        return app

    def instrument(self, engine: AsyncEngine) -> None:
        """Spans for every statement SQLAlchemy runs on ``engine``."""

    def statement(
        self, engine: AsyncEngine, operation: str, sql: str
    ) -> AbstractContextManager[None]:
        """A span around one statement run on ``engine``'s driver directly, past SQLAlchemy
        (``sql`` has placeholders; its parameters are never recorded)."""
        return _NOTHING

    def webhook_attempt(
        self, url: str, attributes: Mapping[str, str]
    ) -> AbstractContextManager[AttemptSpan]:
        """A span around one webhook attempt to ``url`` (only its host and port are kept)."""
        return _NO_ATTEMPT

    def shutdown(self) -> None:
        """Send what is still buffered (the process is ending)."""


NO_TRACING = Tracing()


def listed(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def requested(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces (the rule in the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = listed(environ.get("OTEL_TRACES_EXPORTER"))
    if exporters:
        return bool(exporters - {"none"})
    return any(
        environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def from_environment(environ: Mapping[str, str] | None = None) -> Tracing:
    """What this process traces with: ``NO_TRACING`` unless the variables ask for more."""
    env: Mapping[str, Any] = os.environ if environ is None else environ
    if not requested(env):
        return NO_TRACING
    try:
        # The optional extra, imported here and only here: a service without it, or
        # with tracing off, never loads OpenTelemetry's SDK.
        from service.otel import OtelTracing
    except ImportError as exc:
        log.warning(
            "OTEL_* variables ask for traces, but the otel extra is not installed "
            "(pip install 'action-links[otel]'): running without tracing (%s)",
            exc.name,
        )
        return NO_TRACING
    return OtelTracing.from_environment(env)
