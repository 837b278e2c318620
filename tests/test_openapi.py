"""The OpenAPI document says what the service really answers (the fuzz tests rely on it).

On PostgreSQL only: the document does not depend on the database. Storage is tested on
both databases by ``tests/test_store.py`` and the suites marked ``backends``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema_rs

from service.schemas import LinkRedeemedEvent
from service.store import RedemptionRecord
from service.webhooks import body

PROBLEM = {"$ref": "#/components/schemas/Problem"}
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


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


async def test_served_at_openapi_json_and_rendered_at_docs(http: httpx.AsyncClient) -> None:
    doc = await document(http)
    assert doc["openapi"].startswith("3.1.")
    assert (await http.get("/docs")).status_code == 200
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
        # 429: every route that takes a credential has an abuse limit in front of it.
        assert {"400", "401", "429", "503"} <= set(responses), (method, path)
        for status, response in responses.items():
            if int(status) >= 400:
                assert set(response["content"]) == {"application/problem+json"}
                content = response["content"]["application/problem+json"]
                assert content["schema"]["allOf"] == [PROBLEM]
                codes = content["schema"]["properties"]["code"]["enum"]
                assert codes, (method, path, status)
                assert set(content["examples"]) == set(codes)
                for code, example in content["examples"].items():
                    assert example["value"]["status"] == int(status)
                    assert example["value"]["code"] == code
                    assert f"`{code}`" in response["description"]
        assert "Retry-After" in responses["503"]["headers"]
        assert "Retry-After" in responses["429"]["headers"]
        assert (
            "rate_limited"
            in responses["429"]["content"]["application/problem+json"]["schema"]["properties"][
                "code"
            ]["enum"]
        )


async def test_security_schemes_name_who_may_call(http: httpx.AsyncClient) -> None:
    doc = await document(http)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == schemes["ApiKey"] | {"type": "http", "scheme": "bearer"}
    assert schemes["AdminToken"] == schemes["AdminToken"] | {"type": "http", "scheme": "bearer"}
    for method, path, operation in operations(doc):
        expected: list[dict[str, list[str]]] | None
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
    bad_request = ops["/readyz"]["get"]["responses"]["400"]["content"]["application/problem+json"]
    assert bad_request["schema"]["allOf"] == [PROBLEM]
    assert bad_request["schema"]["properties"]["code"] == {"enum": ["bad_request"]}
    batch = doc["components"]["schemas"]["BatchRequest"]["properties"]["links"]
    assert batch["items"] == {"$ref": "#/components/schemas/LinkRequest"}


async def test_link_answers_are_redirects_and_pages(http: httpx.AsyncClient) -> None:
    link = (await document(http))["paths"]["/r/{token}"]
    assert set(link) == {"get", "post", "head"}
    for method, statuses in {
        "get": {"200", "303", "400", "404", "409", "410", "429", "503"},
        "post": {"200", "303", "400", "403", "404", "409", "410", "429", "503"},
        "head": {"200", "303", "400", "404", "410", "429", "503"},
    }.items():
        responses = link[method]["responses"]
        assert set(responses) == statuses
        assert "Retry-After" in responses["429"]["headers"]
        assert "Location" in responses["303"]["headers"]
        one_click = responses["200"] if method == "post" else None  # RFC 8058's text answer
        if one_click is not None:
            assert set(one_click["content"]) == {"text/plain"}
            assert "Cache-Control" in one_click["headers"]
        for status in statuses - {"303"} - ({"200"} if one_click else set()):
            headers = responses[status]["headers"]
            assert {"Cache-Control", "Content-Security-Policy"} <= set(headers)
            if method != "head":
                assert set(responses[status]["content"]) == {"text/html"}


OPERATION_IDS = {
    ("POST", "/v1/links"): "mintLink",
    ("POST", "/v1/links/batch"): "mintLinks",
    ("GET", "/v1/links/{link_id}"): "getLinkStatus",
    ("DELETE", "/v1/links/{link_id}"): "revokeLink",
    ("POST", "/v1/links/inspect"): "inspectLink",
    ("POST", "/v1/links/resend"): "resendLink",
    ("POST", "/v1/revocations"): "revokeSubject",
    ("GET", "/v1/redemptions"): "listRedemptions",
    ("GET", "/v1/redemptions/{redemption_id}"): "getRedemption",
    ("POST", "/v1/redemptions/{redemption_id}/redeliver"): "redeliverRedemption",
    ("POST", "/v1/admin/clients"): "createClient",
    ("GET", "/v1/admin/clients"): "listClients",
    ("GET", "/v1/admin/clients/{client_id}"): "getClient",
    ("PATCH", "/v1/admin/clients/{client_id}"): "updateClient",
    ("DELETE", "/v1/admin/clients/{client_id}"): "deleteClient",
    ("POST", "/v1/admin/clients/{client_id}/webhook-secret"): "rotateWebhookSecret",
    ("POST", "/v1/admin/clients/{client_id}/keys"): "createApiKey",
    ("GET", "/v1/admin/clients/{client_id}/keys"): "listApiKeys",
    ("DELETE", "/v1/admin/clients/{client_id}/keys/{key_id}"): "deleteApiKey",
    ("PUT", "/v1/admin/clients/{client_id}/actions/{name}"): "putAction",
    ("GET", "/v1/admin/clients/{client_id}/actions"): "listActions",
    ("GET", "/v1/admin/clients/{client_id}/actions/{name}"): "getAction",
    ("DELETE", "/v1/admin/clients/{client_id}/actions/{name}"): "deleteAction",
    ("GET", "/r/{token}"): "followLink",
    ("POST", "/r/{token}"): "confirmLink",
    ("HEAD", "/r/{token}"): "peekLink",
    ("GET", "/healthz"): "checkHealth",
    ("GET", "/readyz"): "checkReadiness",
    ("GET", "/metrics"): "getMetrics",
}
READABLE_ID = re.compile(r"^[a-z]+(?:[A-Z][a-z]+)+$")


async def test_operations_have_readable_ids_summaries_and_descriptions(
    http: httpx.AsyncClient,
) -> None:
    doc = await document(http)
    ids = {(method, path): op.get("operationId") for method, path, op in operations(doc)}
    # Routes added later must be named too: every operation, not only these.
    assert {key: ids[key] for key in OPERATION_IDS} == OPERATION_IDS
    named = list(ids.values())
    assert len(set(named)) == len(named)
    for method, path, operation in operations(doc):
        assert READABLE_ID.match(operation["operationId"]), (method, path)
        assert operation["summary"], (method, path)
        assert not operation["summary"].endswith("."), (method, path)
        assert len(operation.get("description", "")) > 20, (method, path)
        assert len(operation["tags"]) == 1, (method, path)
    assert {tag["name"] for tag in doc["tags"]} >= {
        tag for _, _, op in operations(doc) for tag in op["tags"]
    }


def examples_of(media: dict[str, Any]) -> list[Any]:
    if "example" in media:
        return [media["example"]]
    return [example["value"] for example in media.get("examples", {}).values()]


async def test_json_bodies_have_examples(http: httpx.AsyncClient) -> None:
    doc = await document(http)
    for method, path, operation in operations(doc):
        body = operation.get("requestBody", {}).get("content", {})
        if "application/json" in body:
            assert examples_of(body["application/json"]), (method, path)
        for status, response in operation["responses"].items():
            media = response.get("content", {}).get("application/json")
            if media is not None and status.startswith("2"):
                assert examples_of(media), (method, path, status)


def every_example(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every example of the document, webhooks included."""
    sections = [("paths", doc["paths"]), ("webhooks", doc["webhooks"])]
    for section, items in sections:
        for path, methods in items.items():
            for method, operation in methods.items():
                where = f"{section} {method.upper()} {path}"
                media_types = [
                    (f"{where} request", m)
                    for m in operation.get("requestBody", {}).get("content", {}).values()
                ]
                media_types += [
                    (f"{where} {status}", m)
                    for status, response in operation["responses"].items()
                    for m in response.get("content", {}).values()
                ]
                for label, media in media_types:
                    for example in examples_of(media):
                        yield label, media["schema"], example


async def test_every_example_matches_its_schema(http: httpx.AsyncClient) -> None:
    doc = await document(http)
    checked = 0
    for where, schema, example in every_example(doc):
        validator = jsonschema_rs.validator_for(
            {"$schema": DRAFT_2020_12, "components": doc["components"], **schema}
        )
        errors = [error.message for error in validator.iter_errors(example)]
        assert errors == [], where
        checked += 1
    assert checked > 100


async def test_each_route_lists_its_problem_codes(http: httpx.AsyncClient) -> None:
    doc = await document(http)

    def codes(path: str, method: str, status: str) -> set[str]:
        response = doc["paths"][path][method]["responses"][status]
        return set(
            response["content"]["application/problem+json"]["schema"]["properties"]["code"]["enum"]
        )

    assert codes("/v1/links", "post", "422") == {
        "validation_error",
        "unknown_action",
        "redirect_not_allowed",
        "ttl_too_long",
    }
    assert codes("/v1/links", "post", "413") == {"payload_too_large"}
    # A batch refuses a bad item with 422 and that item's code, payload_too_large included.
    assert "payload_too_large" in codes("/v1/links/batch", "post", "422")
    assert codes("/v1/revocations", "post", "422") == {"validation_error", "unknown_action"}
    assert codes("/v1/redemptions/{redemption_id}/redeliver", "post", "409") == {"conflict"}
    assert codes("/v1/admin/clients", "post", "409") == {"conflict"}
    assert codes("/v1/links/{link_id}", "get", "404") == {"not_found"}
    assert codes("/healthz", "get", "400") == {"bad_request"}


async def test_the_link_redeemed_webhook_is_described(http: httpx.AsyncClient) -> None:
    doc = await document(http)
    hook = doc["webhooks"]["link.redeemed"]["post"]
    assert hook["operationId"] == "linkRedeemed"
    headers = {p["name"]: p for p in hook["parameters"] if p["in"] == "header"}
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert all(p["required"] for p in headers.values())
    schema = hook["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/LinkRedeemedEvent"}
    assert {"200", "4XX", "default"} <= set(hook["responses"])
    # What the service really sends matches the documented schema, field for field.
    redemption = RedemptionRecord(
        redemption_id="r1",
        client_id="shop",
        link_id="l1",
        claim_key="l1",
        action="activate_user",
        subject=None,
        data={"b": [1, 2], "a": None},
        use=1,
        max_uses=None,
        redeemed_at=datetime(2026, 11, 25, 16, 0, 0, 123456, tzinfo=UTC),
    )
    validator = jsonschema_rs.validator_for(
        {"$schema": DRAFT_2020_12, "components": doc["components"], **schema}
    )
    sent = body(redemption)
    assert validator.is_valid(json.loads(sent))
    LinkRedeemedEvent.model_validate_json(sent)


async def test_request_bodies_say_their_text_holds_no_nul(http: httpx.AsyncClient) -> None:
    """What the service refuses (NUL: PostgreSQL text cannot hold it) is in the document,
    so that a generated client or a fuzzer's valid data never meets it as a 422."""
    doc = await document(http)
    schemas = doc["components"]["schemas"]
    bodies = {
        content["schema"]["$ref"].rsplit("/", 1)[1]
        for _, _, operation in operations(doc)
        for content in operation.get("requestBody", {}).get("content", {}).values()
        if "$ref" in content.get("schema", {})
    }
    assert {"LinkRequest", "InspectRequest", "ResendRequest"} <= bodies
    texts = 0
    for name in sorted(bodies):
        for field, spec in schemas[name].get("properties", {}).items():
            for variant in spec.get("anyOf", [spec]):
                if variant.get("type") == "array":
                    variant = variant.get("items", {})
                if variant.get("type") != "string" or variant.keys() & {"format", "enum", "const"}:
                    continue
                texts += 1
                assert "pattern" in variant, f"{name}.{field}"
                assert re.search(variant["pattern"], "a\x00b") is None, f"{name}.{field}"
    assert texts > 10
    cursor = next(
        p for p in doc["paths"]["/v1/redemptions"]["get"]["parameters"] if p["name"] == "cursor"
    )
    assert re.search(cursor["schema"]["anyOf"][0]["pattern"], "a\x00b") is None
