"""Several ``action-links serve`` processes on one database, driven as users drive them.

A ``Fleet`` owns its processes (killing and replacing them on demand) and a
ledger of every secret the test handed them or got from them; when the fleet
stops, every process log is searched for those secrets, so each test that
runs real processes also proves that they logged none (API.md: logs never
contain a token, an API key or a webhook secret).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.conftest import ADMIN_TOKEN, SECRET, SHOP_ORIGIN
from tests.support.processes import ServiceProcess, running_service

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Webhook receivers are not what these tests are about; nothing listens here,
# so deliveries fail fast and stay queued (their rows are what is checked).
WEBHOOK_URL = "http://127.0.0.1:9/hook"


@dataclass
class SecretLedger:
    """Every secret a test used; none may appear in any log."""

    values: set[str] = field(default_factory=set)

    def add(self, *values: str) -> None:
        for value in values:
            self.values.add(value)
            _, _, signature = value.rpartition(".")
            if len(signature) >= 40:  # a token: its signature alone must not leak either
                self.values.add(signature)

    def leaks(self, logs: Sequence[Path]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for log in logs:
            text = log.read_text(errors="replace")
            hits = [v[:12] + "…" for v in self.values if v in text]
            if hits:
                found[log.name] = hits
        return found


class Fleet:
    """``count`` service processes with the same environment, replaceable one by one."""

    def __init__(self, env: dict[str, str], log_dir: Path, stack: ExitStack) -> None:
        self.env = env
        self.log_dir = log_dir
        self._stack = stack
        self.processes: list[ServiceProcess] = []
        # Started beside the others, idle until ``replace`` puts one in a dead one's place.
        self.spares: list[ServiceProcess] = []
        self.logs: list[Path] = []
        self.secrets = SecretLedger()
        self.secrets.add(SECRET, ADMIN_TOKEN)

    def _launch(self) -> ServiceProcess:
        process = self._stack.enter_context(running_service(self.env, self.log_dir))
        self.logs.append(process.log_path)
        return process

    def start_one(self) -> ServiceProcess:
        process = self._launch()
        self.processes.append(process)
        return process

    def start(self, count: int, spares: int = 0) -> None:
        """Start ``count`` processes, and ``spares`` kept out of rotation for ``replace``,
        all at once (each waits for its own health check)."""
        with ThreadPoolExecutor(count + spares) as pool:
            started = [pool.submit(self._launch) for _ in range(count + spares)]
            processes = [process.result() for process in started]
        self.processes.extend(processes[:count])
        self.spares.extend(processes[count:])

    def url(self, index: int) -> str:
        return self.processes[index % len(self.processes)].base_url

    def kill(self, index: int) -> None:
        """SIGKILL: no shutdown, no cleanup, connections dropped mid-request."""
        process = self.processes[index].process
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM to every process at once: they shut down side by side, not one after
        another as their contexts end (which then only wait)."""
        for service in [*self.processes, *self.spares]:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)

    def replace(self, index: int) -> None:
        """A new process in the place of a dead one (on a new port): a spare if one is
        left, else one started now."""
        self.processes[index] = self.spares.pop() if self.spares else self._launch()


@contextmanager
def fleet(env: dict[str, str], log_dir: Path, count: int, spares: int = 0) -> Iterator[Fleet]:
    """Start ``count`` processes (and ``spares``); on exit stop them and search their logs
    for secrets."""
    base = {
        "SECRET_KEYS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_POOL_SIZE": "3",
        "CACHE_TTL": "2",  # so configuration is read from the database during faults too
    }
    with ExitStack() as stack:
        group = Fleet({**base, **env}, log_dir, stack)
        group.start(count, spares)
        try:
            yield group
        finally:
            group.stop()
    leaks = group.secrets.leaks(group.logs)
    assert not leaks, f"secrets found in service logs: {leaks}"


# --- a tenant, set up through the admin API -----------------------------------------


@dataclass
class Shop:
    """A client (``shop`` unless told) with an API key and three actions: once, five (uses)
    and hook (async)."""

    key: str
    webhook_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def setup_shop(
    http: httpx.AsyncClient, base_url: str, group: Fleet, client_id: str = "shop"
) -> Shop:
    body = {
        "id": client_id,
        "name": "Shop",
        "allowed_redirects": [f"{SHOP_ORIGIN}/"],
        "webhook_url": WEBHOOK_URL,
    }
    created = await http.post(f"{base_url}/v1/admin/clients", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    key = await http.post(f"{base_url}/v1/admin/clients/{client_id}/keys", headers=ADMIN)
    assert key.status_code == 201, key.text
    shop = Shop(key.json()["key"], created.json()["webhook_secret"])
    group.secrets.add(shop.key, shop.webhook_secret)
    urls = {"success_url": f"{SHOP_ORIGIN}/ok", "failure_url": f"{SHOP_ORIGIN}/no"}
    for name, extra in (
        ("once", {"max_uses": 1}),
        ("five", {"max_uses": 5}),
        ("hook", {"max_uses": 1, "delivery": "async"}),
    ):
        put = await http.put(
            f"{base_url}/v1/admin/clients/{client_id}/actions/{name}",
            json={**urls, **extra},
            headers=ADMIN,
        )
        assert put.status_code == 200, put.text
    return shop


@dataclass(frozen=True)
class Link:
    id: str
    token: str
    action: str
    max_uses: int

    def path(self) -> str:
        return f"/r/{self.token}"


async def mint_links(
    http: httpx.AsyncClient, base_url: str, shop: Shop, group: Fleet, action: str, count: int
) -> list[Link]:
    links: list[Link] = []
    while len(links) < count:
        batch = [{"action": action} for _ in range(min(1000, count - len(links)))]
        response = await http.post(
            f"{base_url}/v1/links/batch", json={"links": batch}, headers=shop.headers
        )
        assert response.status_code == 201, response.text
        for item in response.json()["links"]:
            links.append(Link(item["id"], item["token"], action, item["max_uses"]))
            group.secrets.add(item["token"])
    return links


# --- what a person following a link gets -------------------------------------------


@dataclass
class Outcomes:
    """Every answer each link got, and the redemption ids the successes carried."""

    by_link: dict[str, list[str]] = field(default_factory=dict)
    redemption_ids: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)

    def add(self, link: Link, outcome: str, redemption_id: str | None, seconds: float) -> None:
        self.by_link.setdefault(link.id, []).append(outcome)
        if redemption_id is not None:
            self.redemption_ids.add(redemption_id)
        self.latencies.append(seconds)

    def totals(self) -> Counter[str]:
        return Counter(o for outcomes in self.by_link.values() for o in outcomes)

    def of(self, link: Link) -> list[str]:
        return self.by_link.get(link.id, [])


UNCERTAIN = frozenset({"unavailable", "transport"})
"""Answers after which the use may or may not have been recorded."""


def http_client() -> httpx.AsyncClient:
    """For setting up and minting: a handful of requests."""
    return httpx.AsyncClient(timeout=60)


async def raw_request(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 60,
    source: str | None = None,
) -> tuple[int, dict[str, str]]:
    """One request on a fresh connection, as a click in a mail program makes it.

    Raw asyncio streams rather than httpx: on a shared 2-core machine httpx
    manages ~120 requests/s, so the "concurrent" requests of a burst would
    reach the service one by one; this manages ~600. ``source``: the local
    address to send from (any of 127.0.0.0/8 is this machine), so that tests
    can be several clients.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    local = (source, 0) if source is not None else None
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can time out just as the
    # connection is made and drop it unclosed (a ResourceWarning that fails the test);
    # a cancellation inside open_connection closes what it made.
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
    try:
        writer.write(request)
        response = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, _ = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    if not status_line.startswith("HTTP/1.1 "):
        raise ConnectionError(f"no HTTP answer: {status_line[:40]!r}")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), answer_headers


async def follow(url: str) -> tuple[str, str | None]:
    """GET a link as a browser would; the outcome and the redemption id of a success."""
    try:
        status, headers = await raw_request(url)
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return "transport", None  # the process died or dropped the connection
    if status == 503:
        return "unavailable", None
    if status != 303:
        return f"status {status}", None
    query = parse_qs(urlsplit(headers["location"]).query)
    if "redemption_id" in query:
        return "success", query["redemption_id"][0]
    return query["error"][0], None


async def hammer(
    group: Fleet,
    links: Sequence[Link],
    requests_per_link: int,
    links_at_once: int,
    outcomes: Outcomes,
    until: asyncio.Event | None = None,
) -> None:
    """Each link gets ``requests_per_link`` concurrent requests, spread over the processes.

    With ``until``, the links are gone through again and again until it is set
    (used-up links keep the claim statement busy on its exhausted path).
    """
    position = itertools.count()

    async def one(link: Link, index: int) -> None:
        started = time.perf_counter()
        outcome, redemption_id = await follow(group.url(index) + link.path())
        outcomes.add(link, outcome, redemption_id, time.perf_counter() - started)

    async def worker() -> None:
        while True:
            index = next(position)
            if until is None and index >= len(links):
                return
            if until is not None and until.is_set():
                return
            link = links[index % len(links)]
            await asyncio.gather(*(one(link, i + index) for i in range(requests_per_link)))

    await asyncio.gather(*(worker() for _ in range(links_at_once)))


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max, in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)}


def report(name: str, **figures: Any) -> None:
    """Figures for the README, appended to ``$HEAVY_REPORT`` when it is set."""
    path = os.environ.get("HEAVY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": name, **figures}, default=str) + "\n")
