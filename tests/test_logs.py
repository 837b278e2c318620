"""Logs: one JSON object per line, a request id, route templates, and never a secret.

On PostgreSQL only: what is logged does not depend on the database. Storage is tested on
both databases by ``tests/test_store.py`` and the suites marked ``backends``.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from service import logs, request_context
from service.logs import FIELDS, ConsoleFormatter, JsonFormatter, logging_config
from service.request_context import RequestInfo
from tests.conftest import ADMIN_TOKEN, SECRET, SHOP_ORIGIN, Tenant, link_path
from tests.support.logcheck import leaks
from tests.support.processes import running_service


def _with_fields(message: str, exc_info: Any, fields: dict[str, Any]) -> logging.LogRecord:
    entry = logging.LogRecord("service.test", logging.INFO, __file__, 1, message, (), exc_info)
    setattr(entry, FIELDS, fields)
    return entry


def _exc_info() -> Any:
    try:
        raise ValueError("boom")
    except ValueError:
        return sys.exc_info()


def test_json_lines_carry_fields_request_id_and_one_line_tracebacks() -> None:
    token = request_context.begin(RequestInfo("req-1"))
    try:
        line = JsonFormatter().format(_with_fields("minted", None, {"client": "shop"}))
        failure = JsonFormatter().format(_with_fields("failed", _exc_info(), {}))
    finally:
        request_context.end(token)
    entry = json.loads(line)
    assert entry["msg"] == "minted"
    assert entry["level"] == "info"
    assert entry["logger"] == "service.test"
    assert entry["request_id"] == "req-1"
    assert entry["client"] == "shop"
    assert entry["ts"].endswith("Z")
    assert "\n" not in failure
    assert "ValueError: boom" in json.loads(failure)["exc"]
    outside = json.loads(JsonFormatter().format(_with_fields("idle", None, {})))
    assert "request_id" not in outside


def test_console_lines_are_readable() -> None:
    line = ConsoleFormatter().format(_with_fields("GET /healthz 200", None, {"status": 200}))
    assert "INFO" in line
    assert "service.test: GET /healthz 200 status=200" in line


def test_chatty_libraries_stay_quiet_at_debug() -> None:
    config = logging_config("debug", "json")
    assert config["root"]["level"] == "DEBUG"
    for name in ("sqlalchemy", "aiosqlite", "httpx", "httpcore"):
        assert config["loggers"][name]["level"] == "WARNING", name
    assert config["loggers"]["uvicorn.access"]["propagate"] is False


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [getattr(r, FIELDS) for r in caplog.records if r.name == "service.access"]


async def test_access_log_names_route_templates_and_ids_never_tokens(
    http: httpx.AsyncClient, shop: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    link = await shop.mint()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="service.access"):
        redeemed = await http.get(link_path(link), headers={"X-Request-ID": "abc-123"})
        refused = await http.get(link_path(link), headers={"X-Request-ID": link["token"]})
        await http.get("/nowhere/" + link["token"])
    assert redeemed.headers["x-request-id"] == "abc-123"
    assert refused.headers["x-request-id"] != link["token"], "an insane id is replaced"
    assert len(refused.headers["x-request-id"]) == 16
    first, second, unmatched = access_records(caplog)
    assert first == {
        "request_id": "abc-123",
        "method": "GET",
        "route": "/r/{token:path}",
        "status": 303,
        "duration_ms": first["duration_ms"],
        "client": "shop",
        "link_id": link["id"],
        "outcome": "success",
    }
    assert second["outcome"] == "used"
    assert unmatched["route"] == "unmatched"
    assert unmatched["status"] == 404
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert link["token"] not in text


@pytest.mark.slow
def test_a_debug_log_holds_no_token_key_or_secret(database_url: str, tmp_path: Path) -> None:
    """Everything secret the service handles, through a real process at LOG_LEVEL=debug."""
    env = {
        "DATABASE_URL": database_url,
        "SECRET_KEYS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_POOL_SIZE": "2",
        "LOG_LEVEL": "debug",
    }
    used = [SECRET, ADMIN_TOKEN]
    with running_service(env, tmp_path) as service, httpx.Client(base_url=service.base_url) as c:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        body = {"id": "shop", "name": "Shop", "allowed_redirects": [f"{SHOP_ORIGIN}/"]}
        created = c.post("/v1/admin/clients", json=body, headers=admin)
        assert created.status_code == 201
        used.append(created.json()["webhook_secret"])
        rotated = c.post("/v1/admin/clients/shop/webhook-secret", headers=admin)
        used.append(rotated.json()["webhook_secret"])
        action = {"success_url": f"{SHOP_ORIGIN}/ok", "failure_url": f"{SHOP_ORIGIN}/no"}
        assert c.put("/v1/admin/clients/shop/actions/go", json=action, headers=admin).is_success
        keys = [c.post("/v1/admin/clients/shop/keys", headers=admin).json()["key"] for _ in "ab"]
        used.extend(keys)
        headers = {"Authorization": f"Bearer {keys[0]}"}
        single = c.post("/v1/links", json={"action": "go", "data": {"n": 1}}, headers=headers)
        batch = c.post(
            "/v1/links/batch",
            json={"links": [{"action": "go", "subject": "7"}, {"action": "go"}]},
            headers={"Authorization": f"Bearer {keys[1]}"},
        )
        links = [single.json(), *batch.json()["links"]]
        used.extend(link["token"] for link in links)
        for link in links:
            path = "/r/" + link["token"]
            assert c.head(path).status_code == 200
            assert c.get(path).status_code == 303
            assert c.post(path).status_code == 303
            c.get(path + "?utm=1", headers={"X-Request-ID": link["token"]})
            c.get("/rr/" + link["token"])
        forged = links[0]["token"][:-4] + "AAAA"
        used.append(forged)
        assert c.get("/r/" + forged).status_code == 400
        wrong_key = keys[0][:-4] + "AAAA"
        used.append(wrong_key)
        assert (
            c.post("/v1/links", json={"action": "go"}, headers=_bearer(wrong_key)).status_code
            == 401
        )
        wrong_admin = ADMIN_TOKEN + "x"
        used.append(wrong_admin)
        assert c.get("/v1/admin/clients", headers=_bearer(wrong_admin)).status_code == 401
        deleted_key = c.get("/v1/admin/clients/shop/keys", headers=admin).json()[1]["id"]
        assert (
            c.delete(f"/v1/admin/clients/shop/keys/{deleted_key}", headers=admin).status_code == 204
        )
    log = service.log()
    lines = log.splitlines()
    assert len(lines) > 30
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(e.get("route") == "/r/{token:path}" and e.get("link_id") for e in entries)
    assert any(e["level"] == "debug" for e in entries), "the log really is at DEBUG"
    assert not [secret for secret in used if secret in log]
    assert leaks(log) == []


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_json_lines_are_compact_ascii_whatever_the_values() -> None:
    """orjson writes the lines; what it would write otherwise (non-ASCII text, lone
    surrogates, huge integers) goes through the standard library, still one ASCII line."""
    from datetime import UTC, datetime

    from service.logs import encode_line

    moment = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
    assert encode_line({"a": 1, "b": "x"}) == '{"a":1,"b":"x"}'
    assert encode_line({"at": moment}) == '{"at":"2026-12-02 22:00:00+00:00"}'  # str(), as before
    for value in ("café", "\ud800", 2**70, {1: "int key"}):
        line = encode_line({"v": value})
        assert line.isascii()
        assert "\n" not in line
        assert json.loads(line) == {"v": json.loads(json.dumps(value))}


def test_the_direct_access_line_is_the_line_the_json_formatter_writes() -> None:
    """``logs.json_line`` (the access log's line without a record) holds the same fields in
    the same order as ``JsonFormatter`` for the same message, fields and request."""
    fields = {"method": "GET", "route": "/r/{token:path}", "status": 303, "client": "shop"}
    token = request_context.begin(RequestInfo("0123456789abcdef"))
    try:
        direct = json.loads(logs.json_line("service.access", logging.INFO, "GET / 303", fields))
        record = logging.LogRecord(
            "service.access", logging.INFO, __file__, 1, "GET / 303", (), None
        )
        setattr(record, FIELDS, fields)
        formatted = json.loads(JsonFormatter().format(record))
    finally:
        request_context.end(token)
    assert direct.pop("ts").endswith("Z")
    assert formatted.pop("ts").endswith("Z")
    assert list(direct.items()) == list(formatted.items())


def test_the_direct_access_line_is_written_only_where_logging_would_do_nothing_else() -> None:
    """``logs.direct_json`` hands back serve's one JSON handler, and nothing when logging
    would do more with a record (a filter, another handler, another format)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.filters[:], root.level)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("service.access")
    try:
        root.handlers[:] = [handler]
        root.filters[:] = []
        assert logs.direct_json(access, logging.INFO) is handler
        root.addFilter(logging.Filter("other"))
        assert logs.direct_json(access, logging.INFO) is None
        root.filters[:] = []
        root.addHandler(logging.StreamHandler(io.StringIO()))
        assert logs.direct_json(access, logging.INFO) is None
        root.handlers[:] = [handler]
        handler.setFormatter(ConsoleFormatter())
        assert logs.direct_json(access, logging.INFO) is None
    finally:
        root.handlers[:], root.filters[:] = saved[0], saved[1]
        root.setLevel(saved[2])
