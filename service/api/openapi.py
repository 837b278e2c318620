"""What the OpenAPI document (``/openapi.json``) says about the answers.

FastAPI describes a route's success body from its return type and nothing
else: every error would read as its own ``HTTPValidationError`` JSON, and the
redirects and HTML pages under ``/r/`` not at all. The schemathesis fuzz tests
(``tests/test_fuzz_api.py``) hold every answer against this document, so it
has to say what the service really sends:

- ``problem_responses(...)``: the statuses a JSON route answers with RFC 9457
  problem details (``application/problem+json``, one shared ``Problem``
  schema); routers declare them once per router and add route-specific ones.
- ``page_responses(...)``: the HTML pages and the ``303`` of ``/r/{token}``,
  with the headers every answer there carries.
- ``install_openapi(app)``: builds the document once, adds the ``Problem``
  schema, and drops FastAPI's default ``422`` where a route never answers it
  (under ``/r/`` a request that does not validate is the ``400`` page).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.problem_json import PROBLEM_JSON
from service.pages import LINK_HEADERS, PAGES
from service.schemas import Problem

SCHEMAS_REF = "#/components/schemas/"
PROBLEM_REF = {"$ref": SCHEMAS_REF + "Problem"}
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

_PROBLEM_DESCRIPTIONS = {
    400: "Unreadable request: a NUL in the URL, or a body that is not UTF-8 JSON (`bad_request`)",
    401: "No or a wrong credential (`unauthorized`)",
    404: "Not found, or not this caller's (`not_found`)",
    409: "Conflict with the current state (`conflict`)",
    413: "Request body or `data` too large (`payload_too_large`)",
    422: "The request does not validate (`validation_error` with `errors`, or a domain code)",
    503: "The database cannot be reached (`unavailable`); see `Retry-After`",
}

Responses = dict[int | str, dict[str, Any]]


def _header(description: str, value: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if value is not None:
        schema["enum"] = [value]
    return {"description": description, "required": True, "schema": schema}


RETRY_AFTER = {"Retry-After": _header("Seconds to wait before trying again")}


def problem_responses(*statuses: int) -> Responses:
    """``responses=`` entries: each status answers ``application/problem+json``."""
    responses: Responses = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _PROBLEM_DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
        }
        if status == 503:
            response["headers"] = RETRY_AFTER
        responses[status] = response
    return responses


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


def _problem_components() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template=SCHEMAS_REF + "{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    components["Problem"] = schema
    return components


def _without_default_validation_errors(document: dict[str, Any]) -> None:
    """Drop the 422 FastAPI adds on its own to routes that never answer it."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if "application/json" in content:
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)


def _with_url_guard_answers(document: dict[str, Any]) -> None:
    """Every JSON route may answer 400: ``api.url_guard`` refuses a NUL in any URL first."""
    for path, operations in document.get("paths", {}).items():
        if path.startswith("/r/"):
            continue  # declared there as the 400 page
        for operation in operations.values():
            operation.setdefault("responses", {}).setdefault("400", problem_responses(400)[400])


def install_openapi(app: FastAPI) -> None:
    """Serve the document described above at ``/openapi.json`` (built on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _without_default_validation_errors(document)
            _with_url_guard_answers(document)
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(_problem_components())
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
