"""What the OpenAPI document (``/openapi.json``, rendered at ``/docs``) says about each route.

FastAPI describes a route from its signature alone: every error would read as
its own ``HTTPValidationError`` JSON, the redirects and pages under ``/r/``
not at all, and generated clients would get names like
``mint_link_v1_links_post``. The schemathesis fuzz tests
(``tests/test_fuzz_api.py``) hold every answer against this document, and
``tests/test_openapi.py`` holds every operation to the convention below.

The convention: one call per route
----------------------------------

Every route of the JSON API declares itself with ``operation(...)``, whose
result is the decorator's keyword arguments::

    @router.post(
        "/exchange",
        **operation(
            "exchangeRedemption",                      # operationId: a readable verb + noun
            "Exchange a success redirect's code",      # summary: one line, no full stop
            status=200,                                # the success status
            problems=(*CLIENT_API, *JSON_BODY, NotFound, CodeUsed, CodeExpired),
            request_example={"code": "…"},
            response_example=examples.REDEMPTION,
        ),
    )
    async def exchange_redemption(...) -> RedemptionOut:
        \"\"\"The description, in Markdown (FastAPI reads the docstring).\"\"\"

- ``problems`` lists every problem the route may answer: domain errors as
  their classes from ``service.errors`` (each knows its status, ``code``
  and title; its docstring is the meaning shown in the document), codes
  without a class as a ``ProblemCode``. They are grouped by status into
  ``application/problem+json`` responses whose schema is ``Problem`` with
  ``code`` restricted to the listed codes, with one example per code, so
  the fuzz tests fail on a code the route sends but does not declare.
  ``CLIENT_API``, ``ADMIN_API`` and ``JSON_BODY`` are the shared parts.
  ``400 bad_request`` is added to every route (``api.url_guard`` refuses a
  NUL in any URL first), so routes leave it out.
- ``operation_id``: camelCase, verb first, unique. A problem whose ``code``
  is not a class's (the redirect's ``error`` words on ``/v1/links/redeem``)
  or whose meaning differs on one route (``not_found`` of a resend hint) is a
  ``ProblemCode(status, code, title, meaning)``.
- ``request_example`` / ``response_example``: plain JSON values (the shared
  ones are in ``service.api.examples``); ``tests/test_openapi.py`` validates
  every example against its schema.
- ``responses``: anything else (the HTML pages of ``/r/``, ``/readyz``'s 503).

Also here: ``page_responses(...)`` (the ``303`` and pages of ``/r/{token}``
with the headers every answer there carries), the tags, and
``install_openapi(app)``, which builds the document once, adds the
``Problem`` schema and the ``link.redeemed`` webhook (OpenAPI 3.1
``webhooks``, ``service.api.webhook_event``), and drops FastAPI's default
``422`` where a route never answers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from inspect import cleandoc
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from service.api.problem_json import PROBLEM_JSON
from service.errors import (
    ApiError,
    DatabaseUnavailable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from service.pages import LINK_HEADERS, PAGES
from service.schemas import Problem

SCHEMAS_REF = "#/components/schemas/"
PROBLEM_REF = {"$ref": SCHEMAS_REF + "Problem"}
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
JSON = "application/json"

Responses = dict[int | str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ProblemCode:
    """One ``code`` a route may answer, at one status, and what it means."""

    status: int
    code: str
    title: str
    meaning: str

    @classmethod
    def of(cls, error: type[ApiError], status: int | None = None) -> ProblemCode:
        """The code of a domain error; ``status`` when a route answers it at another one."""
        meaning = cleandoc(error.__doc__ or error.title).split("\n\n")[0].replace("\n", " ")
        return cls(status or error.status, error.code, error.title, meaning)


Problems = Sequence[type[ApiError] | ProblemCode]

BAD_REQUEST = ProblemCode(
    400,
    "bad_request",
    "Bad request",
    "The request cannot be read: a NUL character in the URL, a body that is not UTF-8 JSON, "
    "or an invalid Content-Length.",
)
# Every route of a client's backend (API key) and of the operators (admin token); each
# has the abuse limit of failed authentications in front of it (``service.rate_limits``).
CLIENT_API: Problems = (Unauthorized, RateLimited, DatabaseUnavailable)
ADMIN_API: Problems = (Unauthorized, NotFound, RateLimited, DatabaseUnavailable)
# Every route that reads a JSON body.
JSON_BODY: Problems = (PayloadTooLarge, ValidationFailed)

TAGS = [
    {
        "name": "links",
        "description": "Mint links, look at them, take them back (a client's backend, API key).",
    },
    {
        "name": "redemptions",
        "description": "The audit log of a client's redemptions, and their webhooks.",
    },
    {
        "name": "admin",
        "description": "Clients, API keys and actions (operators, `ADMIN_TOKEN`; "
        "every route answers 404 while no admin token is configured).",
    },
    {
        "name": "link",
        "description": "Where people arrive: `/r/{token}` answers with redirects and "
        "HTML pages, never JSON.",
    },
    {"name": "operations", "description": "Health, readiness and metrics."},
]


def _header(description: str, value: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if value is not None:
        schema["enum"] = [value]
    return {"description": description, "required": True, "schema": schema}


RETRY_AFTER = {"Retry-After": _header("Seconds to wait before trying again")}
# Codes whose answers carry Retry-After: declared required where a status has only such
# codes, optional where it has others too (a 429 ``code_locked`` has nothing to wait for).
RETRY_AFTER_CODES = frozenset({DatabaseUnavailable.code, RateLimited.code})
SOMETIMES_RETRY_AFTER = {
    "Retry-After": {
        **_header(
            f"With {', '.join(f'`{c}`' for c in sorted(RETRY_AFTER_CODES))}: seconds to wait"
        ),
        "required": False,
    }
}


def _codes(problems: Iterable[type[ApiError] | ProblemCode]) -> list[ProblemCode]:
    return [p if isinstance(p, ProblemCode) else ProblemCode.of(p) for p in problems]


def problem_responses(problems: Iterable[type[ApiError] | ProblemCode]) -> Responses:
    """``responses=`` entries: per status, problem details restricted to the listed codes."""
    by_status: dict[int, dict[str, ProblemCode]] = {}
    for problem in _codes(problems):
        by_status.setdefault(problem.status, {})[problem.code] = problem
    responses: Responses = {}
    for status, codes in sorted(by_status.items()):
        schema = {
            "allOf": [PROBLEM_REF],
            "properties": {"code": {"enum": list(codes)}},
        }
        examples = {
            code: {
                "summary": problem.title,
                "value": {
                    "type": "about:blank",
                    "title": problem.title,
                    "status": status,
                    "code": code,
                    "detail": problem.meaning,
                },
            }
            for code, problem in codes.items()
        }
        response: dict[str, Any] = {
            "description": "\n".join(f"- `{c}`: {p.meaning}" for c, p in codes.items()),
            "content": {PROBLEM_JSON: {"schema": schema, "examples": examples}},
        }
        waiting = RETRY_AFTER_CODES.intersection(codes)
        if waiting:
            response["headers"] = RETRY_AFTER if waiting == set(codes) else SOMETIMES_RETRY_AFTER
        responses[status] = response
    return responses


def operation(
    operation_id: str,
    summary: str,
    *,
    status: int = 200,
    problems: Problems = (),
    request_example: Any = None,
    response_example: Any = None,
    responses: Responses | None = None,
) -> dict[str, Any]:
    """The keyword arguments of a route decorator: ``@router.post(path, **operation(...))``.

    The route's docstring is its description. See the module docstring.
    """
    declared: Responses = {**problem_responses(problems), **(responses or {})}
    # Examples go in ``openapi_extra``: ``install_openapi`` puts them back as written
    # (FastAPI drops every null from the document, the nulls of examples included).
    extra: dict[str, Any] = {}
    if request_example is not None:
        extra["requestBody"] = {"content": {JSON: {"example": request_example}}}
    if response_example is not None:
        extra["responses"] = {str(status): {"content": {JSON: {"example": response_example}}}}
    return {
        "operation_id": operation_id,
        "summary": summary,
        "status_code": status,
        "responses": declared,
        "openapi_extra": extra or None,
    }


_LINK_HEADERS = {
    name: _header("On every answer under /r/", value) for name, value in LINK_HEADERS.items()
}
_PAGE_HEADERS = {
    **_LINK_HEADERS,
    "Content-Security-Policy": _header("Per-response nonce"),
    "Content-Language": _header("The page's language, the best match of Accept-Language"),
    "Vary": _header("The page depends on Accept-Language", "Accept-Language"),
}
_WAIT_STATUSES = (429, 503)
_PAGE_DESCRIPTIONS = {
    200: "The confirmation page (nothing has happened yet)",
    403: "Confirmation refused (no valid nonce): nothing was done; the page again",
    404: "HTML page: not_found (a path no route matches, e.g. a line break in the token)",
}


def _page_kinds(status: int) -> str:
    return ", ".join(kind for kind, text in PAGES.items() if text.status == status)


def page_responses(*statuses: int, body: bool = True) -> Responses:
    """``responses=`` entries of ``/r/{token}``: the 303 and the HTML pages.

    ``body=False`` for HEAD, which answers with a page's status and headers only.
    """
    responses: Responses = {}
    for status in statuses:
        if status == 303:
            responses[status] = {
                "description": "Redirect to the success URL, or to the failure URL with `error=`",
                "headers": {**_LINK_HEADERS, "Location": _header("Where to go")},
            }
            continue
        response: dict[str, Any] = {
            "description": _PAGE_DESCRIPTIONS.get(status) or f"HTML page: {_page_kinds(status)}",
            "headers": {**_PAGE_HEADERS, **(RETRY_AFTER if status in _WAIT_STATUSES else {})},
        }
        if body:
            response["content"] = {"text/html": {"schema": {"type": "string"}}}
        responses[status] = response
    return responses


def one_click_response() -> Responses:
    """The ``200`` of ``POST /r/{token}`` for RFC 8058 one-click unsubscribe: plain text."""
    return {
        200: {
            "description": "One-click unsubscribe (RFC 8058) done, now or before: a short "
            "plain text in the person's language",
            "headers": dict(_LINK_HEADERS),
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }


DESCRIPTION = """\
Signed links that do one thing, exactly as often as allowed.

A client's backend mints links (`POST /v1/links`, with its API key as
`Authorization: Bearer alk_…`); people follow them (`/r/{token}`); each
accepted use is recorded as a redemption and, for actions with webhooks,
POSTed to the client as a Standard Webhooks message (see *Webhooks* below).

Every error of the JSON API is RFC 9457 problem details
(`application/problem+json`) with a stable, machine-readable `code`; each
operation lists the codes it may answer.
"""


def _without_default_validation_errors(document: dict[str, Any]) -> None:
    """Drop the 422 FastAPI adds on its own to routes that never answer it."""
    for operations in document.get("paths", {}).values():
        for op in operations.values():
            responses = op.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if JSON in content:
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)


def _with_url_guard_answers(document: dict[str, Any]) -> None:
    """Every JSON route may answer 400: ``api.url_guard`` refuses a NUL in any URL first."""
    bad_request = problem_responses([BAD_REQUEST])[400]
    for path, operations in document.get("paths", {}).items():
        if path.startswith("/r/"):
            continue  # declared there as the 400 page
        for op in operations.values():
            op.setdefault("responses", {}).setdefault("400", bad_request)


def _put_back(target: dict[str, Any], written: dict[str, Any]) -> None:
    for key, value in written.items():
        if isinstance(value, dict) and key != "example" and isinstance(target.get(key), dict):
            _put_back(target[key], value)
        else:
            target[key] = value


def _with_examples_as_written(document: dict[str, Any], routes: Iterable[BaseRoute]) -> None:
    """Each route's ``openapi_extra`` again, unchanged: FastAPI renders the document
    with ``exclude_none``, which takes every ``null`` out of the examples too."""
    by_id = {
        op["operationId"]: op
        for section in ("paths", "webhooks")
        for operations in document.get(section, {}).values()
        for op in operations.values()
        if "operationId" in op
    }
    for context in iter_route_contexts(list(routes)):
        route = context.original_route
        if isinstance(route, APIRoute) and route.openapi_extra and route.operation_id in by_id:
            _put_back(by_id[route.operation_id], route.openapi_extra)


def _responses_in_order(document: dict[str, Any]) -> None:
    """Statuses in ascending order, as a reader looks for them."""
    for section in ("paths", "webhooks"):
        for operations in document.get(section, {}).values():
            for op in operations.values():
                op["responses"] = dict(sorted(op.get("responses", {}).items()))


def _problem_components() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template=SCHEMAS_REF + "{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    components["Problem"] = schema
    return components


def install_openapi(app: FastAPI) -> None:
    """Serve the document described above at ``/openapi.json`` (built on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=DESCRIPTION,
                routes=app.routes,
                webhooks=app.webhooks.routes,
                tags=TAGS,
            )
            _without_default_validation_errors(document)
            _with_url_guard_answers(document)
            _with_examples_as_written(document, [*app.routes, *app.webhooks.routes])
            _responses_in_order(document)
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(_problem_components())
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
