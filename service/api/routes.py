"""Which route a request is for, by its template: the name metrics, logs and spans use.

FastAPI's routes leave themselves in ``scope["route"]`` when they answer;
Starlette's plain routes (``/openapi.json``, the documentation pages and their
assets) and a method a path does not allow (405) do not. For those the
app's routes are matched again after the answer, exactly as the router
matched them, so that only a request no route's path matches is
``unmatched`` (a true 404). The template (``/r/{token:path}``) is the
route's, never the path, so a token can never become a label or a span name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from fastapi.routing import RouteContext, iter_route_contexts
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

UNMATCHED = "unmatched"

# The app answering the current request (``service.main.ActionLinks`` sets it).
serving: ContextVar[Any] = ContextVar("serving_app", default=None)


class ServingApp:
    """The dependency overrides of the app answering the request, for routes every app
    of the process shares.

    ``app.include_router`` builds each route again for each app (its dependencies,
    body and response models analysed anew: most of an app's start-up), only so
    that the route reads that app's ``dependency_overrides``. The service's routers
    name this object instead (``dependency_overrides_provider``); their routes are
    built once, at import, and every app holds the same ones (``service.main``).
    """

    @property
    def dependency_overrides(self) -> dict[Callable[..., Any], Callable[..., Any]]:
        app = serving.get()
        overrides: dict[Callable[..., Any], Callable[..., Any]] = (
            {} if app is None else app.dependency_overrides
        )
        return overrides


SERVING_APP = ServingApp()


def matches(scope: Scope) -> Iterator[tuple[Match, RouteContext]]:
    """Every route of the app whose path matches the request (``Match.PARTIAL``:
    the path only, not the method), in the router's order."""
    app = scope.get("app")
    for route in iter_route_contexts(getattr(app, "routes", ())):
        match, _ = route.matches(dict(scope))
        if match is not Match.NONE:
            yield match, route


def template(scope: Scope) -> str:
    """The template of the route that took the request, after it was answered."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    partial: str | None = None
    for match, route in matches(scope):
        if match is Match.FULL and route.path is not None:
            return route.path
        partial = partial or route.path
    return partial or UNMATCHED


def documenting(routes: Sequence[BaseRoute], status: int) -> Iterator[tuple[str, str]]:
    """(method, template) of each route whose OpenAPI answers include ``status``."""
    for route in iter_route_contexts(routes):
        answers = getattr(route.original_route, "responses", None) or {}
        if route.path is not None and (status in answers or str(status) in answers):
            for method in sorted(route.methods or ()):
                yield method, route.path
