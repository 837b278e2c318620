"""Tracing: named by route template, parameters never recorded, no secret in any span.

The app is traced into memory (``InMemorySpanExporter``) through a whole flow
on PostgreSQL, and every exported span (name, attributes, events, links,
status, resource) is searched for each token, API key, code, nonce, admin
token and webhook secret the flow used. A webhook goes to a real receiver
on 127.0.0.1, which must get the attempt's ``traceparent``. A real ``serve``
with two workers shows the ``OTEL_*`` rule and the console exporter.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service import tracing
from service.config import Settings
from service.main import create_app
from service.otel import OtelTracing
from tests.conftest import ADMIN_TOKEN, SECRET, Tenant, link_path, make_tenant
from tests.support.logcheck import leaks
from tests.support.processes import REPO_ROOT, running_service
from tests.support.receiver import Receiver
from tests.support.served import ADMIN, provision_shop, service_env
from tests.test_confirm import nonce_of
from tests.test_one_click import ONE_CLICK
from tests.test_resend import expired_link, hint_of

LINK_ROUTE = "/r/{token:path}"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced_app(settings: Settings, exported: InMemorySpanExporter) -> AsyncIterator[FastAPI]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    app = create_app(settings, OtelTracing(provider))
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def traced_http(traced_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=traced_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def dump(span: ReadableSpan) -> str:
    """Everything a span carries to a tracing backend, as text."""
    text: str = span.to_json(indent=None)
    return text


def server_spans(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.SERVER and s.name == name]


def query_of(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)


async def test_no_secret_in_any_span_of_a_whole_flow(
    traced_app: FastAPI,
    traced_http: httpx.AsyncClient,
    exported: InMemorySpanExporter,
    admin_headers: dict[str, str],
) -> None:
    http = traced_http
    receiver = Receiver().up()
    secrets: set[str] = {SECRET, ADMIN_TOKEN}
    try:
        shop: Tenant = await make_tenant(http, admin_headers, "shop", webhook_url=receiver.url)
        await shop.put_action("activate", admin_headers, delivery="async")
        await shop.put_action("confirmed", admin_headers, confirm="page")
        secrets |= {shop.key, shop.webhook_secret}
        extra_key = await http.post("/v1/admin/clients/shop/keys", headers=admin_headers)
        rotated = await http.post("/v1/admin/clients/shop/webhook-secret", headers=admin_headers)
        secrets |= {extra_key.json()["key"], rotated.json()["webhook_secret"]}
        assert (await http.get("/v1/admin/clients", headers=admin_headers)).status_code == 200
        assert (await http.get("/v1/admin/clients/shop/keys", headers=admin_headers)).is_success

        # Mint, inspect, peek (HEAD), follow (the GET fast path) with an inline webhook.
        link = await shop.mint(subject="user-42", data={"plan": "gold"})
        secrets.add(link["token"])
        inspected = await http.post(
            "/v1/links/inspect", json={"token": link["token"]}, headers=shop.headers
        )
        assert inspected.json()["valid"] is True
        assert (await http.head(link_path(link))).status_code == 200
        followed = await http.get(link_path(link))
        codes = query_of(followed).get("code", [])
        delivered = await receiver.wait_for(1)

        # Confirm page (GET shows it, POST with its nonce redeems), then a used link.
        confirm = await shop.mint("confirmed")
        secrets.add(confirm["token"])
        page = await http.get(link_path(confirm))
        assert page.status_code == 200
        nonce = nonce_of(page.text)
        secrets.add(nonce)
        posted = await http.post(link_path(confirm), data={"confirm": nonce})
        codes += query_of(posted).get("code", [])
        assert query_of(await http.get(link_path(link)))["error"] == ["used"]

        # The success redirects' exchange codes.
        assert len(codes) == 2
        for code in codes:
            secrets.add(code)
            exchanged = await http.post(
                "/v1/redemptions/exchange", json={"code": code}, headers=shop.headers
            )
            assert exchanged.status_code == 200, exchanged.text

        # A typed code (a wrong one first), through the caller's backend.
        typed = await shop.mint(code=True)
        secrets |= {typed["token"], typed["code"]}
        wrong = "000000" if typed["code"] != "000000" else "111111"
        body = {"token": typed["token"], "code": wrong}
        refused = await http.post("/v1/links/redeem", json=body, headers=shop.headers)
        assert refused.status_code == 422, refused.text
        body["code"] = typed["code"]
        accepted = await http.post("/v1/links/redeem", json=body, headers=shop.headers)
        assert accepted.status_code == 200, accepted.text

        # One-click unsubscribe (a mail provider's POST), and a resend after expiry.
        await shop.put_action("unsubscribe", admin_headers, one_click=True, confirm="page")
        unsubscribe = await shop.mint("unsubscribe")
        secrets.add(unsubscribe["token"])
        clicked = await http.post(link_path(unsubscribe), content=ONE_CLICK, headers=FORM)
        assert clicked.status_code == 200, clicked.text
        expired = expired_link(traced_app.state.services)
        secrets.add(traced_app.state.services.codec.sign_link(expired))
        hint = await hint_of(http, traced_app.state.services, expired)
        secrets.add(hint)
        resent = await http.post("/v1/links/resend", json={"resend": hint}, headers=shop.headers)
        assert resent.status_code == 201, resent.text
        secrets.add(resent.json()["token"])

        # Refusals: a forged token, wrong credentials.
        assert (await http.get("/r/forged-" + link["token"][::-1])).status_code == 400
        wrong_key = {"Authorization": f"Bearer {shop.key}x"}
        assert (await http.post("/v1/links", json={}, headers=wrong_key)).status_code == 401
        wrong_admin = {"Authorization": f"Bearer {ADMIN_TOKEN}x"}
        assert (await http.get("/v1/admin/clients", headers=wrong_admin)).status_code == 401
        assert (await http.get("/openapi.json")).status_code == 200
        assert (await http.get("/docs")).status_code == 200
    finally:
        receiver.down()

    spans = exported.get_finished_spans()
    for span in spans:
        text = dump(span)
        assert leaks(text, secrets) == [], span.name
        for secret in secrets:
            assert secret not in text, span.name

    # Named by route template; the link path was traced on every door.
    names = {s.name for s in spans if s.kind is SpanKind.SERVER}
    assert {f"GET {LINK_ROUTE}", f"POST {LINK_ROUTE}", f"HEAD {LINK_ROUTE}"} <= names
    assert {"POST /v1/links", "POST /v1/links/inspect", "POST /v1/links/redeem"} <= names
    assert {"POST /v1/redemptions/exchange", "GET /openapi.json", "GET /docs"} <= names
    assert "POST /v1/links/resend" in names
    follow = server_spans(spans, f"GET {LINK_ROUTE}")[0]
    assert follow.attributes is not None
    assert follow.attributes["http.route"] == LINK_ROUTE
    assert follow.attributes["http.response.status_code"] == 303
    assert follow.attributes["action_links.outcome"] == "success"
    assert not any(
        k.startswith(("url.path", "url.query", "http.target")) for k in follow.attributes
    )

    # Statements with placeholders, the claim on the direct line among them, as children.
    statements = [s for s in spans if s.attributes and "db.query.text" in s.attributes]
    assert any(s.name.startswith("claim ") for s in statements)
    assert any(s.name.startswith("SELECT ") for s in statements)
    assert all(s.attributes and s.attributes["db.system.name"] == "postgresql" for s in statements)
    claim = next(s for s in statements if s.name.startswith("claim "))
    assert claim.context is not None
    assert claim.parent is not None
    assert follow.context is not None
    assert claim.context.trace_id == follow.context.trace_id

    # The webhook attempts (the followed link's, the typed code's): each a span of its
    # redemption's trace, whose context the receiver got.
    attempts = [s for s in spans if s.name == "POST webhook"]
    assert len(attempts) == 2
    for attempt in attempts:
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.attributes is not None
        assert attempt.attributes["action_links.webhook.outcome"] == "delivered"
        assert attempt.attributes["server.address"] == "127.0.0.1"
    traceparent = TRACEPARENT.fullmatch(delivered[0].headers["traceparent"])
    assert traceparent is not None
    (attempt,) = [
        a for a in attempts if a.context and a.context.trace_id == follow.context.trace_id
    ]
    assert attempt.context is not None
    assert int(traceparent.group(1), 16) == follow.context.trace_id
    assert int(traceparent.group(2), 16) == attempt.context.span_id


async def test_a_callers_traceparent_is_the_parent_and_errors_keep_no_message(
    traced_http: httpx.AsyncClient, exported: InMemorySpanExporter
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    incoming = {"traceparent": f"00-{trace_id}-{parent_id}-01", "baggage": "user=secret-baggage"}
    response = await traced_http.post("/v1/links", json={}, headers=incoming)
    assert response.status_code == 401
    assert (await traced_http.request("BREW", "/r/some-token-path")).status_code == 405
    assert (await traced_http.get("/nowhere/at-all")).status_code == 404
    spans = exported.get_finished_spans()
    status = server_spans(spans, "POST /v1/links")[0]
    assert status.context is not None
    assert status.parent is not None
    assert format(status.context.trace_id, "032x") == trace_id
    assert format(status.parent.span_id, "016x") == parent_id
    assert "secret-baggage" not in dump(status)
    brewed = server_spans(spans, f"HTTP {LINK_ROUTE}")[0]
    assert brewed.attributes is not None
    assert brewed.attributes["http.request.method"] == "_OTHER"
    assert "some-token-path" not in dump(brewed)
    unmatched = server_spans(spans, "GET")[0]
    assert unmatched.attributes is not None
    assert "http.route" not in unmatched.attributes
    assert "at-all" not in dump(unmatched)


# --- the OTEL_* rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "links"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "none, console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ],
)
def test_otel_variables_decide(environ: dict[str, str], on: bool) -> None:
    assert tracing.requested(environ) is on
    assert tracing.from_environment(environ).enabled is on or not on


def test_untraced_service_imports_nothing_of_the_sdk() -> None:
    """With no OTEL_* variable, building the app loads neither service.otel nor the SDK."""
    script = (
        "import sys\n"
        "from service.config import Settings\n"
        "from service.main import create_app\n"
        "create_app(Settings(secret_keys='k' * 40))\n"
        "print([m for m in sys.modules if m.startswith(('service.otel', 'opentelemetry.sdk'))])\n"
    )
    environ = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_without_the_extra_the_service_runs_untraced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "service.otel", None)  # as if not installed
    chosen = tracing.from_environment({"OTEL_TRACES_EXPORTER": "otlp"})
    assert chosen is tracing.NO_TRACING
    assert "otel extra is not installed" in caplog.text


# --- a real serve, traced by its environment -------------------------------------------------


@pytest.fixture
def console_traced(database_url: str, tmp_path: Path) -> Iterator[Any]:
    env = service_env(database_url, 3, OTEL_TRACES_EXPORTER="console", LOG_LEVEL="info")
    with running_service(env, tmp_path, "--workers", "2") as service:
        yield service


@pytest.mark.slow
async def test_serve_traces_when_the_environment_asks(console_traced: Any) -> None:
    async with httpx.AsyncClient(base_url=console_traced.base_url, timeout=30) as http:
        headers = await provision_shop(http)
        minted = await http.post("/v1/links", json={"action": "go"}, headers=headers)
        token = minted.json()["token"]
        assert (await http.get(f"/r/{token}")).status_code == 303
        assert (await http.get("/v1/admin/clients", headers=ADMIN)).status_code == 200
    output = console_traced.log()
    names = {
        json.loads(match)["name"] for match in re.findall(r"^\{\n.*?^\}$", output, re.M | re.S)
    }
    assert f"GET {LINK_ROUTE}" in names
    assert "POST /v1/links" in names
    assert token not in output
    assert headers["Authorization"].removeprefix("Bearer ") not in output
    # The access log carries the trace id of each request.
    access = [json.loads(line) for line in output.splitlines() if '"service.access"' in line]
    assert access
    assert all(re.fullmatch("[0-9a-f]{32}", e["trace_id"]) for e in access)
