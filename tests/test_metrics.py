"""/metrics: what it counts, that tokens never become labels, and that worker processes add up."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service import __version__, metrics
from service.config import Settings
from service.redeem import Outcome
from service.webhooks import ATTEMPT_KINDS
from tests.conftest import Tenant, link_path, make_tenant
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.hooks import eventually
from tests.support.processes import (
    REPO_ROOT,
    ServiceProcess,
    free_port,
    running_command,
    running_service,
)
from tests.support.receiver import Answer, Receiver
from tests.support.served import provision_shop, service_env, serving

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient) -> tuple[str, Samples]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, parse(response.text)


async def test_counts_mints_redemptions_and_auth_failures(
    http: httpx.AsyncClient, shop: Tenant, admin_headers: dict[str, str]
) -> None:
    _, before = await scrape(http)
    links = [await shop.mint() for _ in range(3)]
    batch = await http.post(
        "/v1/links/batch", json={"links": [{"action": "activate"}] * 4}, headers=shop.headers
    )
    assert batch.status_code == 201
    for link in links:
        await http.get(link_path(link))
    await http.get(link_path(links[0]))
    await http.get("/r/not-a-token")
    await http.post("/v1/links", json={"action": "activate"}, headers={"Authorization": "x"})
    await http.get("/v1/admin/clients", headers={"Authorization": "Bearer wrong"})
    text, after = await scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    minted = "action_links_links_minted_total"
    assert delta(minted, client="shop", action="activate") == 7
    assert delta("action_links_redemptions_total", outcome="success") == 3
    assert delta("action_links_redemptions_total", outcome="used") == 1
    assert delta("action_links_redemptions_total", outcome="invalid") == 1
    failures = "action_links_auth_failures_total"
    assert delta(failures, credential="link_token") == 1
    assert delta(failures, credential="api_key") == 1
    assert delta(failures, credential="admin_token") == 1
    count = "action_links_http_request_duration_seconds_count"
    assert delta(count, method="GET", route="/r/{token:path}", status="303") == 4
    assert delta(count, method="GET", route="/r/{token:path}", status="400") == 1
    for link in links:
        assert link["token"] not in text
        assert link["id"] not in text
    routes = {dict(labels).get("route") for (_, labels) in after}
    assert all(r is None or r == "unmatched" or r.startswith("/") for r in routes)


async def test_unmatched_paths_and_odd_methods_get_fixed_labels(
    http: httpx.AsyncClient,
) -> None:
    count = "action_links_http_request_duration_seconds_count"
    _, before = await scrape(http)
    assert (await http.get("/nothing-here")).status_code == 404
    assert (await http.request("BREW", "/anything/secret-looking-path")).status_code == 404
    text, after = await scrape(http)
    assert "secret-looking-path" not in text
    assert "BREW" not in text
    for method in ("GET", "OTHER"):
        labels = {"method": method, "route": "unmatched", "status": "404"}
        assert value(after, count, **labels) - value(before, count, **labels) == 1


@pytest.mark.backends(POSTGRES, SQLITE)  # the one read of storage here
async def test_delivery_backlog_is_read_from_the_outbox(
    http: httpx.AsyncClient, database_url: str
) -> None:
    _, empty = await scrape(http)
    assert value(empty, "action_links_delivery_backlog") == 0
    assert value(empty, "action_links_delivery_oldest_pending_age_seconds") == 0
    old = datetime.now(UTC) - timedelta(minutes=10)
    for n, status in enumerate(("pending", "pending", "delivered")):
        redemption = f"link{n}.1"
        await fetch(
            database_url,
            "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, use, redeemed_at)"
            " VALUES ($1, 'shop', $2, $3, 'activate', 1, $4)",
            redemption,
            f"link{n}",
            f"l:link{n}",
            old,
        )
        await fetch(
            database_url,
            "INSERT INTO deliveries (redemption_id, client_id, status, attempts, next_attempt_at,"
            " created_at) VALUES ($1, 'shop', $2, 0, $3, $4)",
            redemption,
            status,
            old,
            old - timedelta(minutes=n),
        )
    _, samples = await scrape(http)
    assert value(samples, "action_links_delivery_backlog") == 2
    assert value(samples, "action_links_delivery_oldest_pending_age_seconds") >= 660


def test_serve_prepares_an_empty_metrics_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics.MULTIPROC_ENV, "")  # so that teardown restores "not set"
    monkeypatch.delenv(metrics.MULTIPROC_ENV)
    assert metrics.prepare_multiprocess_dir(1) is None, "one process keeps metrics in memory"
    assert metrics.MULTIPROC_ENV not in os.environ
    created = metrics.prepare_multiprocess_dir(2)
    assert created is not None
    assert os.environ[metrics.MULTIPROC_ENV] == str(created)
    assert list(created.iterdir()) == []
    created.rmdir()

    chosen = tmp_path / "metrics"
    chosen.mkdir()
    (chosen / "counter_123.db").write_bytes(b"stale")
    (chosen / "keep.txt").write_text("not ours")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(chosen))
    assert metrics.prepare_multiprocess_dir(2) is None, "the operator's directory stays"
    assert [p.name for p in chosen.iterdir()] == ["keep.txt"], "stale values are gone"


# --- two worker processes -----------------------------------------------------------------


def log_entries(service: ServiceProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in service.log().splitlines() if line.strip()]


def pids_serving(service: ServiceProcess, route: str, since: int = 0) -> set[int]:
    """The workers that served ``route``, in the log from its entry ``since`` on."""
    return {e["pid"] for e in log_entries(service)[since:] if e.get("route") == route}


def serving_workers(service: ServiceProcess) -> list[int]:
    """Workers that finished their startup and have not shut down, in start order."""
    entries = log_entries(service)
    finished = {e["pid"] for e in entries if e["msg"].startswith("Finished server process")}
    started = [e["pid"] for e in entries if e["msg"] == "Application startup complete."]
    return [pid for pid in started if pid not in finished]


async def workers_become(service: ServiceProcess, expected: Callable[[list[int]], bool]) -> None:
    async def reached() -> bool:
        return expected(serving_workers(service))

    await eventually(reached, timeout=60, what="the workers to start or stop")


async def test_counts_webhook_attempts_by_outcome(
    http: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    receiver = Receiver().up()
    try:
        shop = await make_tenant(http, admin_headers, "shop", webhook_url=receiver.url)
        await shop.put_action("activate", admin_headers, delivery="sync")
        _, before = await scrape(http)
        await http.get(link_path(await shop.mint()))
        receiver.answer(Answer(409, json={"error": "out_of_stock"}))
        await http.get(link_path(await shop.mint()))
        receiver.answer(Answer(503))
        await http.get(link_path(await shop.mint()))
    finally:
        receiver.down()
    closed = {"webhook_url": f"http://127.0.0.1:{free_port()}/hooks"}
    await http.patch("/v1/admin/clients/shop", json=closed, headers=admin_headers)
    await http.get(link_path(await shop.mint()))
    _, after = await scrape(http)
    name = "action_links_webhook_attempts_total"
    for outcome in ("delivered", "rejected", "failed", "unreachable"):
        delta = value(after, name, outcome=outcome) - value(before, name, outcome=outcome)
        assert delta == 1, outcome


# --- what a scrape holds ---------------------------------------------------------------------

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
METRIC_NAME = re.compile(r"\b(action_links_[a-z0-9_]+|process_[a-z0-9_]+)\b")


def alert_metric_names() -> set[str]:
    """Every series name the example alert rules query."""
    rules = yaml.safe_load(ALERTS.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def assert_zeros_from_the_start(text: str, samples: Samples) -> None:
    """Each family declared, and each label value known in advance present at 0."""
    for family in metrics.FAMILIES:
        for described in family.describe():
            declared = re.compile(rf"^# TYPE {described.name}(_total)? ", re.M)
            assert declared.search(text), described.name
    for outcome in Outcome:
        labels = frozenset({("outcome", outcome.value)})
        assert ("action_links_redemptions_total", labels) in samples
    for kind in ATTEMPT_KINDS:
        labels = frozenset({("outcome", kind)})
        assert ("action_links_webhook_attempts_total", labels) in samples
        assert ("action_links_webhook_attempt_duration_seconds_count", labels) in samples
    for credential in get_args(metrics.Credential):
        labels = frozenset({("credential", credential)})
        assert ("action_links_auth_failures_total", labels) in samples
    assert ("action_links_deliveries_failed_total", frozenset()) in samples
    assert ("action_links_db_pool_wait_seconds_count", frozenset()) in samples
    assert "_created" not in text
    assert all(name in {n for n, _ in samples} for name in alert_metric_names())


async def test_every_family_and_known_value_in_a_fresh_scrape(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    text, samples = await scrape(http)
    assert_zeros_from_the_start(text, samples)
    assert value(samples, "action_links_db_pool_size") == settings.database_pool_size
    build = {"version": __version__, "revision": "unknown"}
    assert value(samples, "action_links_build_info", **build) == 1
    assert "process_resident_memory_bytes" in text  # one process: the library's own collector


async def test_minted_counts_from_zero_for_each_action(
    http: httpx.AsyncClient, shop: Tenant, admin_headers: dict[str, str]
) -> None:
    await shop.put_action("unsubscribe", admin_headers)
    _, samples = await scrape(http)
    minted = "action_links_links_minted_total"
    assert (minted, frozenset({("client", "shop"), ("action", "unsubscribe")})) in samples


async def test_routes_without_a_fastapi_route_are_named_by_template(
    http: httpx.AsyncClient,
) -> None:
    count = "action_links_http_request_duration_seconds_count"
    _, before = await scrape(http)
    assert (await http.get("/openapi.json")).status_code == 200
    assert (await http.get("/docs")).status_code == 200
    assert (await http.delete("/healthz")).status_code == 405
    assert (await http.get("/v1/nothing")).status_code == 404
    _, after = await scrape(http)
    for method, route, status in (
        ("GET", "/openapi.json", "200"),
        ("GET", "/docs", "200"),
        ("DELETE", "/healthz", "405"),
        ("GET", "unmatched", "404"),
    ):
        labels = {"method": method, "route": route, "status": status}
        assert value(after, count, **labels) - value(before, count, **labels) == 1, labels


async def test_pool_waits_are_timed_and_the_pool_sampled(
    http: httpx.AsyncClient, shop: Tenant
) -> None:
    waits = "action_links_db_pool_wait_seconds_count"
    _, before = await scrape(http)
    await http.get(link_path(await shop.mint()))  # the claim on the direct line
    _, after = await scrape(http)
    assert value(after, waits) - value(before, waits) >= 2  # the claim, the scrape's backlog
    assert 0 <= value(after, "action_links_db_pool_in_use") <= 10


async def test_attempt_latency_and_deliveries_that_end_failed(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    receiver = Receiver().up()
    receiver.answer(Answer(503, delay=0.2))
    timing = {"webhook_retry_schedule": [0.05], "webhook_poll_interval": 0.05}
    no_retries = settings.model_copy(update=timing)
    try:
        async with serving(no_retries) as http:
            shop = await make_tenant(http, admin_headers, "shop", webhook_url=receiver.url)
            await shop.put_action("activate", admin_headers, delivery="async")
            _, before = await scrape(http)
            await http.get(link_path(await shop.mint()))
            await receiver.wait_for(2)  # the inline attempt, and the one retry
            for _ in range(100):
                _, after = await scrape(http)
                failed = "action_links_deliveries_failed_total"
                if value(after, failed) - value(before, failed) == 1:
                    break
                await asyncio.sleep(0.05)
    finally:
        receiver.down()
    assert value(after, failed) - value(before, failed) == 1
    name = "action_links_webhook_attempt_duration_seconds"
    counted = value(after, f"{name}_count", outcome="failed")
    assert counted - value(before, f"{name}_count", outcome="failed") == 2
    slow = value(after, f"{name}_bucket", outcome="failed", le="0.1")
    assert slow == value(before, f"{name}_bucket", outcome="failed", le="0.1"), "took >= 0.2 s"


@pytest.mark.slow
async def test_two_workers_start_at_zero_and_add_up_their_totals(
    http: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    """One ``serve --workers 2`` (its processes are what this costs), in two parts:
    a fresh serve shows everything at zero, then its workers' totals add up."""
    headers = await provision_shop(http)  # before the serve starts, in-process
    # Scrapes are logged at DEBUG: the test sees who served them.
    env = service_env(database_url, 3, LOG_LEVEL="debug")
    with running_service(env, tmp_path, "--workers", "2") as service:
        await a_fresh_serve_shows_everything_at_zero(service)
        await totals_add_up_across_worker_processes(service, headers)


async def totals_add_up_across_worker_processes(
    two_workers: ServiceProcess, headers: dict[str, str]
) -> None:
    """A scrape reports what every worker counted, a worker that has exited included:
    one worker serves a first round alone; it stops, and its replacement serves the
    second round and the scrape, which reports the totals of both rounds."""
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    expected: Counter[str] = Counter()
    async with httpx.AsyncClient(
        base_url=two_workers.base_url, limits=no_reuse, timeout=30
    ) as http:

        async def mint() -> str:
            response = await http.post("/v1/links", json={"action": "go"}, headers=headers)
            assert response.status_code == 201
            expected["minted"] += 1
            return "/r/" + str(response.json()["token"])

        async def redeem(path: str) -> None:
            location = (await http.get(path)).headers["location"]
            assert "redemption_id=" in location or "error=used" in location
            expected["success" if "redemption_id=" in location else "used"] += 1

        async def round_of_requests() -> None:
            paths = await asyncio.gather(*(mint() for _ in range(5)))
            await asyncio.gather(*(redeem(p) for p in paths + paths[:2]))
            batch = await http.post(
                "/v1/links/batch", json={"links": [{"action": "go"}] * 5}, headers=headers
            )
            assert batch.status_code == 201
            expected["minted"] += 5

        async def scrape_reports_the_totals() -> None:
            _, samples = await scrape(http)
            minted = value(samples, "action_links_links_minted_total", client="shop", action="go")
            assert minted == expected["minted"]
            redemptions = "action_links_redemptions_total"
            assert value(samples, redemptions, outcome="success") == expected["success"]
            assert value(samples, redemptions, outcome="used") == expected["used"]

        await workers_become(two_workers, lambda pids: len(pids) == 2)
        os.kill(two_workers.process.pid, signal.SIGTTOU)  # the supervisor retires one
        await workers_become(two_workers, lambda pids: len(pids) == 1)
        [first] = serving_workers(two_workers)
        since = len(log_entries(two_workers))  # the scrapes before were both workers'
        await round_of_requests()
        await scrape_reports_the_totals()
        routes = ("/v1/links", "/v1/links/batch", "/r/{token:path}", "/metrics")
        assert all(pids_serving(two_workers, route, since) == {first} for route in routes)

        os.kill(first, signal.SIGTERM)  # the supervisor starts a replacement
        await workers_become(two_workers, lambda pids: len(pids) == 1 and first not in pids)
        [second] = serving_workers(two_workers)
        await round_of_requests()
        await scrape_reports_the_totals()
        assert all(pids_serving(two_workers, route, since) == {first, second} for route in routes)
    assert expected["used"] == 4
    assert expected["minted"] == 20


async def a_fresh_serve_shows_everything_at_zero(service: ServiceProcess) -> None:
    """Configured before the serve starts, then scraped before any link traffic."""
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=service.base_url, limits=no_reuse) as scraper:
        for _ in range(100):  # until both workers have started and sampled themselves
            text, samples = await scrape(scraper)
            pids = {
                dict(labels)["pid"]
                for name, labels in samples
                if name == "process_resident_memory_bytes"
            }
            # A worker writes its CPU counter and its gauges to two files, which a scrape
            # reads in directory order: mid-sample, it may see the gauges but not the CPU yet.
            sampled = all(value(samples, "process_cpu_seconds_total", pid=pid) > 0 for pid in pids)
            if len(pids) == 2 and sampled and value(samples, "action_links_db_pool_size") == 6:
                break
            await asyncio.sleep(0.2)
    assert len(pids) == 2, "each worker's process metrics"
    for pid in pids:
        assert value(samples, "process_resident_memory_bytes", pid=pid) > 10_000_000
        assert value(samples, "process_open_fds", pid=pid) > 0
        assert value(samples, "process_cpu_seconds_total", pid=pid) > 0
    assert value(samples, "action_links_db_pool_size") == 6, "3 per worker"
    assert_zeros_from_the_start(text, samples)
    minted = ("action_links_links_minted_total", frozenset({("client", "shop"), ("action", "go")}))
    assert samples[minted] == 0
    for outcome in Outcome:
        assert value(samples, "action_links_redemptions_total", outcome=outcome.value) == 0
    assert value(samples, "action_links_build_info", version=__version__, revision="unknown") == 1


@pytest.mark.slow
async def test_a_standalone_dispatcher_serves_its_own_metrics(
    settings: Settings, admin_headers: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """Retries made by ``action-links dispatcher``, and the delivery that ends failed there,
    are counted where Prometheus can scrape them."""
    closed = f"http://127.0.0.1:{free_port()}/hooks"
    web = settings.model_copy(update={"webhook_dispatcher": False, "webhook_retry_schedule": [0.1]})
    async with serving(web) as http:
        shop = await make_tenant(http, admin_headers, "shop", webhook_url=closed)
        await shop.put_action("activate", admin_headers, delivery="async")
        await http.get(link_path(await shop.mint()))  # the inline attempt fails; one retry left
    port = free_port()
    command = [sys.executable, "-m", "service", "dispatcher", "--metrics-port", str(port)]
    token = "metrics-token-0123456789abcdef"
    env = service_env(database_url, 2, WEBHOOK_RETRY_SCHEDULE="", METRICS_TOKEN=token)
    with running_command(command, env, tmp_path, port) as dispatcher:
        async with httpx.AsyncClient() as anonymous:
            refused = await anonymous.get(f"{dispatcher.base_url}/metrics")
        assert refused.status_code == 401, "METRICS_TOKEN holds here too"
        assert refused.headers["content-type"] == "application/problem+json"
        bearer = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=dispatcher.base_url, headers=bearer) as scraper:
            for _ in range(100):
                text, samples = await scrape(scraper)
                if value(samples, "action_links_deliveries_failed_total") == 1:
                    break
                await asyncio.sleep(0.1)
        dispatcher.process.send_signal(signal.SIGTERM)
        assert dispatcher.process.wait(timeout=15) == 0
    assert value(samples, "action_links_deliveries_failed_total") == 1
    assert value(samples, "action_links_webhook_attempts_total", outcome="unreachable") == 1
    duration = "action_links_webhook_attempt_duration_seconds_count"
    assert value(samples, duration, outcome="unreachable") == 1
    assert value(samples, duration, outcome="delivered") == 0
    assert ("action_links_webhook_attempts_total", frozenset({("outcome", "timeout")})) in samples
    assert value(samples, "action_links_db_pool_size") == 2
    assert value(samples, "action_links_auth_failures_total", credential="metrics_token") == 1
    assert "process_resident_memory_bytes" in text
    assert "_created" not in text
