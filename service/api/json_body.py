"""JSON request bodies nested too deep are refused before FastAPI's parser reads them.

FastAPI parses a body with ``json.loads``, which recurses once per level: a
body of a few thousand levels raised ``RecursionError`` (answered 400, "error
parsing the body"), and one of a few hundred became a value that a later
encoder failed on (a 500). Every router with JSON bodies uses ``JsonRoute``,
whose handler first measures the body (``json_depth.parse`` for JSON, which
measures as it parses, or ``json_depth.refuse_deep``; no recursion) and
answers 422 ``validation_error`` naming the field where it gets too deep, and
for a batch the item's index. JSON bodies that pass are parsed here once;
FastAPI reuses the result.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from service.errors import ValidationFailed
from service.json_depth import MAX_DATA_DEPTH, Path, TooDeep, parse, refuse_deep

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
FIELD_STEPS = 3  # enough to name ``data``, or ``links``, an index and ``data``


class JsonRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle

        async def guarded(request: Request) -> Response:
            await refuse_deep_body(request)
            return await handle(request)

        return guarded


async def refuse_deep_body(request: Request) -> None:
    try:
        body = await request.body()
    except ClientDisconnect:
        return  # FastAPI answers this as it always has
    if not body:
        return
    try:
        if is_json(request.headers.get("content-type", "")):
            # Kept where ``Request.json`` keeps what it parsed: FastAPI reads it from there.
            request._json = parse(body)
        else:
            refuse_deep(body)
    except TooDeep as exc:
        raise too_deep(exc.path) from None
    except RecursionError:  # Python's parser stopped sooner than the measure (never seen)
        raise too_deep([]) from None
    except ValueError:
        return  # not JSON: FastAPI's own parse says so, as a 422


def is_json(content_type: str) -> bool:
    """What FastAPI parses as JSON: ``application/json`` and ``application/*+json``."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def field_of(path: Path) -> Path:
    """The first steps of ``path``, up to the last field name among them: ``["data"]``,
    ``["links", 2, "data"]``; the array indexes that follow add nothing."""
    field = path[:FIELD_STEPS]
    while field and not isinstance(field[-1], str):
        field.pop()
    return field


def too_deep(path: Path) -> ValidationFailed:
    loc: Path = ["body", *field_of(path)]
    error: dict[str, Any] = {
        "loc": loc,
        "msg": f"nested more than {MAX_DATA_DEPTH} levels deep",
        "type": "too_deep",
    }
    if len(loc) > 2 and loc[1] == "links" and isinstance(loc[2], int):
        error |= {"index": loc[2], "code": "validation_error"}  # as a batch names its items
    return ValidationFailed(f"invalid fields: {'.'.join(map(str, loc))}", errors=[error])
