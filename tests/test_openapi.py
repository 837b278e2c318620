"""The OpenAPI document says what the service really answers (the fuzz tests rely on it)."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM = {"$ref": "#/components/schemas/Problem"}


async def document(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in doc["paths"].items()
        for method, operation in methods.items()
    ]


async def test_served_at_openapi_json_without_docs_pages(http: httpx.AsyncClient) -> None:
    await document(http)
    assert (await http.get("/docs")).status_code == 404
    assert (await http.get("/redoc")).status_code == 404


async def test_json_errors_are_problem_details(http: httpx.AsyncClient) -> None:
    doc = await document(http)
    schemas = doc["components"]["schemas"]
    assert set(schemas["Problem"]["required"]) == {"title", "status", "code", "detail"}
    assert "HTTPValidationError" not in schemas
    for method, path, operation in operations(doc):
        if not path.startswith("/v1/"):
            continue
        responses = operation["responses"]
        assert {"401", "503"} <= set(responses), (method, path)
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}
        assert "Retry-After" in responses["503"]["headers"]


async def test_security_schemes_name_who_may_call(http: httpx.AsyncClient) -> None:
    doc = await document(http)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == schemes["ApiKey"] | {"type": "http", "scheme": "bearer"}
    assert schemes["AdminToken"] == schemes["AdminToken"] | {"type": "http", "scheme": "bearer"}
    for method, path, operation in operations(doc):
        if path.startswith("/v1/admin/"):
            expected = [{"AdminToken": []}]
        elif path.startswith("/v1/"):
            expected = [{"ApiKey": []}]
        elif path == "/metrics":
            expected = [{"MetricsToken": []}]  # when a METRICS_TOKEN is configured
        else:
            expected = None
        assert operation.get("security") == expected, (method, path)


async def test_bodies_as_sent(http: httpx.AsyncClient) -> None:
    doc = await document(http)
    for method, path, operation in operations(doc):
        for status, response in operation["responses"].items():
            if status in ("204", "202", "303") or method == "HEAD":
                assert "content" not in response, (method, path, status)
    ops = doc["paths"]
    assert set(ops["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    # 400: the URL guard refuses a NUL in any URL, /readyz's query included.
    assert set(ops["/readyz"]["get"]["responses"]) == {"200", "400", "503"}
    assert ops["/readyz"]["get"]["responses"]["400"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    batch = doc["components"]["schemas"]["BatchRequest"]["properties"]["links"]
    assert batch["items"] == {"$ref": "#/components/schemas/LinkRequest"}


async def test_link_answers_are_redirects_and_pages(http: httpx.AsyncClient) -> None:
    link = (await document(http))["paths"]["/r/{token}"]
    assert set(link) == {"get", "post", "head"}
    for method, statuses in {
        "get": {"200", "303", "400", "404", "409", "410", "503"},
        "post": {"303", "400", "403", "404", "409", "410", "503"},
        "head": {"200", "303", "400", "404", "410", "503"},
    }.items():
        responses = link[method]["responses"]
        assert set(responses) == statuses
        assert "Location" in responses["303"]["headers"]
        for status in statuses - {"303"}:
            headers = responses[status]["headers"]
            assert {"Cache-Control", "Content-Security-Policy"} <= set(headers)
            if method != "head":
                assert set(responses[status]["content"]) == {"text/html"}
