"""The spans, with OpenTelemetry's SDK (the ``otel`` extra); imported only when tracing is on.

The service makes its spans itself rather than with the usual instrumentation
packages, because those record what must never leave the process: the
FastAPI/ASGI ones the URL path (``/r/<token>``) and query, the httpx one the
webhook URL (which may carry a receiver's secret), the SQLAlchemy one the
driver's error message. Here every attribute is chosen:

- server span (``ServerSpans``, an ASGI middleware, so the ``/r/`` fast path
  is traced like every route): named ``METHOD route-template`` once the
  request is answered; ``http.request.method``, ``http.route``,
  ``http.response.status_code``, ``url.scheme``, ``network.protocol.version``,
  and what the access log knows (request id, client, link id, outcome). An
  incoming W3C ``traceparent`` is the parent; ``baggage`` is ignored.
- database spans: ``db.query.text`` is the statement with its placeholders,
  never a parameter; ``db.system.name``, ``db.namespace``, ``server.address``,
  ``server.port`` come from the URL (never its user or password).
- webhook attempt span: ``server.address``/``server.port`` of the receiver
  (never its path or query), the status it answered and the attempt's
  outcome; its context goes out in ``traceparent``.
- errors: ``error.type`` is an exception's class name, never its message.

The exporters are the ``OTEL_TRACES_EXPORTER`` list (``otlp`` when unset,
``console``): OTLP over HTTP/protobuf, configured by the exporter's own
``OTEL_EXPORTER_OTLP_*`` variables; sampling by ``OTEL_TRACES_SAMPLER``;
``service.name`` is ``action-links`` unless ``OTEL_SERVICE_NAME`` or
``OTEL_RESOURCE_ATTRIBUTES`` say otherwise. The provider is this module's own,
not OpenTelemetry's global one, so no other library in the process traces
through it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import event
from sqlalchemy.engine import URL, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__, request_context, tracing
from service.api import routes
from service.tracing import AttemptSpan

log = logging.getLogger(__name__)

SERVICE_NAME = "action-links"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTLP_PROTOCOL = "http/protobuf"
_SPAN_KEY = "_action_links_span"  # where a statement's span waits for its end
_W3C = TraceContextTextMapPropagator()  # traceparent and tracestate; never baggage


class _AsgiHeaders(Getter[list[tuple[bytes, bytes]]]):
    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


_ASGI_HEADERS = _AsgiHeaders()


def _failed(span: Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(StatusCode.ERROR)


class ServerSpans:
    """One SERVER span per HTTP request, named by its route template once it is answered."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "_OTHER"
        name = method if method != "_OTHER" else "HTTP"  # then "GET /r/{token:path}"
        parent = _W3C.extract(scope["headers"], getter=_ASGI_HEADERS)
        span = self.tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
            },
        )
        info = request_context.current()
        if info is not None:
            info.trace_id = format(span.get_span_context().trace_id, "032x")
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span, parent))
        error: str | None = None
        try:
            await self.app(scope, receive, send_noting_status)
        except Exception as exc:
            error = type(exc).__qualname__
            raise
        finally:
            otel_context.detach(token)
            self._finish(span, scope, name, status, error)

    @staticmethod
    def _finish(span: Span, scope: Scope, name: str, status: int | None, error: str | None) -> None:
        route = routes.template(scope)
        if route != routes.UNMATCHED:
            span.update_name(f"{name} {route}")
            span.set_attribute("http.route", route)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        info = request_context.current()
        if info is not None:
            span.set_attribute("action_links.request_id", info.request_id)
            for name, value in (
                ("action_links.client", info.client_id),
                ("action_links.link_id", info.link_id),
                ("action_links.outcome", info.outcome),
            ):
                if value is not None:
                    span.set_attribute(name, value)
        if error is not None or status is None:
            _failed(span, error or "incomplete_response")
        elif status >= 500:
            _failed(span, str(status))
        span.end()


class _Attempt(AttemptSpan):
    def __init__(self, span: Span, headers: dict[str, str]) -> None:
        self.span = span
        self.headers = headers

    def finished(self, outcome: str, status: int | None) -> None:
        self.span.set_attribute("action_links.webhook.outcome", outcome)
        if status is not None:
            self.span.set_attribute("http.response.status_code", status)
        if outcome != "delivered":
            _failed(self.span, outcome)


class _Database:
    """A database's span attributes, from its URL (never its user or password)."""

    def __init__(self, url: URL) -> None:
        attributes: dict[str, Any] = {"db.system.name": url.get_backend_name()}
        if url.database:
            attributes["db.namespace"] = url.database
        if url.host:
            attributes["server.address"] = url.host
        if url.port:
            attributes["server.port"] = url.port
        self.attributes = attributes
        self.name = url.database or url.get_backend_name()

    def span(self, sql: str, operation: str | None = None) -> tuple[str, dict[str, Any]]:
        """A statement's span name and attributes (its SQL, with placeholders)."""
        if operation is None:
            words = sql.split(maxsplit=1)
            operation = words[0].upper() if words else "SQL"
        extra = {"db.operation.name": operation, "db.query.text": sql}
        return f"{operation} {self.name}", {**self.attributes, **extra}


@cache
def _database(url: URL) -> _Database:
    return _Database(url)


class OtelTracing(tracing.Tracing):
    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("action-links", __version__)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> OtelTracing:
        provider = TracerProvider(resource=_resource())
        for exporter in sorted(tracing.listed(environ.get("OTEL_TRACES_EXPORTER")) or {"otlp"}):
            if exporter == "otlp":
                protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
                    "OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOL
                )
                if protocol.strip() != OTLP_PROTOCOL:
                    log.warning("OTLP over %r is not supported: using %s", protocol, OTLP_PROTOCOL)
                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            elif exporter == "console":
                provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            elif exporter != "none":
                log.warning("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console)", exporter)
        return cls(provider)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        return ServerSpans(app, self.tracer)

    def instrument(self, engine: AsyncEngine) -> None:
        database = _database(engine.url)
        tracer = self.tracer

        def before(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            if context is None:
                return
            name, attributes = database.span(statement)
            span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
            setattr(context, _SPAN_KEY, span)

        def after(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            span: Span | None = getattr(context, _SPAN_KEY, None)
            if span is not None:
                span.end()

        def failed(exception_context: ExceptionContext) -> None:
            span: Span | None = getattr(exception_context.execution_context, _SPAN_KEY, None)
            if span is not None:
                _failed(span, type(exception_context.original_exception).__qualname__)
                span.end()

        sync_engine = engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", before)
        event.listen(sync_engine, "after_cursor_execute", after)
        event.listen(sync_engine, "handle_error", failed)

    @contextmanager
    def _statement(self, engine: AsyncEngine, operation: str, sql: str) -> Iterator[None]:
        name, attributes = _database(engine.url).span(sql, operation)
        with self.tracer.start_as_current_span(
            name,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                _failed(span, type(exc).__qualname__)
                raise

    def statement(
        self, engine: AsyncEngine, operation: str, sql: str
    ) -> AbstractContextManager[None]:
        return self._statement(engine, operation, sql)

    @contextmanager
    def _attempt(self, url: str, attributes: Mapping[str, str]) -> Iterator[AttemptSpan]:
        span_attributes: dict[str, Any] = {"http.request.method": "POST", **attributes}
        try:
            parts = urlsplit(url)
            if parts.hostname:
                span_attributes["server.address"] = parts.hostname
            if parts.port:
                span_attributes["server.port"] = parts.port
            span_attributes["url.scheme"] = parts.scheme
        except ValueError:
            pass  # the attempt reports the invalid URL; the span keeps nothing of it
        with self.tracer.start_as_current_span(
            "POST webhook",
            kind=SpanKind.CLIENT,
            attributes=span_attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            headers: dict[str, str] = {}
            _W3C.inject(headers)
            try:
                yield _Attempt(span, headers)
            except Exception as exc:
                _failed(span, type(exc).__qualname__)
                raise

    def webhook_attempt(
        self, url: str, attributes: Mapping[str, str]
    ) -> AbstractContextManager[AttemptSpan]:
        return self._attempt(url, attributes)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _resource() -> Resource:
    """``service.name`` and ``service.version``, unless the OTEL_* variables set them."""
    defaults: dict[str, Any] = {"service.name": SERVICE_NAME, "service.version": __version__}
    for name in OTELResourceDetector().detect().attributes:
        defaults.pop(name, None)
    return Resource.create(defaults)
