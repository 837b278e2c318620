"""CPU time per request of each hot path, in-process: the tool for removing overhead.

``python -m bench.cpu [--requests N] [--concurrency C] [--only redeem,...]``
drives the ASGI apps of Action Links and of the baseline directly (no HTTP,
no uvicorn, no load generator), against a fresh PostgreSQL database, and
reports for each path the CPU the Python process spent per request and the
CPU the PostgreSQL backends spent per request. Run it under
``py-spy record --gil`` to see where the time goes.

On a busy shared machine even CPU time swings by tens of percent, so
``--callgrind DIR`` counts instructions instead, which do not swing at all
(kernel work, such as the socket writes of a database round trip, is not
counted)::

    valgrind --tool=callgrind --callgrind-out-file=DIR/cg.%p \
        python -m bench.cpu --callgrind DIR --requests 300

Each measured phase is then one callgrind dump, and the report gives
instructions per request.

Each path is first run with a tenth as many requests as a warm-up, which is
neither reported nor dumped; then with ``--requests``, which is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from bench import database
from bench.baseline import create_app as create_baseline
from bench.database import SERVER_URL
from bench.servers import pids_cpu_seconds
from bench.targets import MINT_BODY, SHOP
from service.config import Settings
from service.main import create_app as create_service

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Request = Callable[[], Awaitable[tuple[int, dict[str, str], bytes]]]
PATHS = ("mint", "batch", "redeem", "exhausted")


async def call(
    app: ASGIApp, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request through the ASGI app, as uvicorn would make it."""
    raw_headers = [(b"host", b"127.0.0.1:8000")]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if body:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update({k.decode(): v.decode() for k, v in message["headers"]})
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, response_headers, b"".join(chunks)


async def backend_cpu(dsn: str) -> float:
    """CPU seconds of every PostgreSQL backend connected to this database."""
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(SERVER_URL)
    try:
        pids = [
            r["pid"]
            for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
        ]
    finally:
        await conn.close()
    return pids_cpu_seconds(pids)


async def callgrind(*command: str) -> None:
    """Send a command to the callgrind instance this process runs under, and wait for it."""
    control = await asyncio.create_subprocess_exec(
        "callgrind_control",
        *command,
        str(os.getpid()),
        stdout=asyncio.subprocess.DEVNULL,
    )
    await control.wait()


def last_dump_instructions(directory: Path) -> int:
    dumps = sorted(directory.glob(f"*.{os.getpid()}.*"), key=lambda p: int(p.suffix[1:]))
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


async def drive(label: str, requests: list[Request], concurrency: int, expect: int) -> None:
    """Send ``requests``, ``concurrency`` at a time; each must answer ``expect``."""
    for start in range(0, len(requests), concurrency):
        results = await asyncio.gather(*(r() for r in requests[start : start + concurrency]))
        for status, _, body in results:
            if status != expect:
                raise RuntimeError(f"{label}: {status} {body[:200]!r}")


async def measure(
    label: str,
    dsn: str,
    requests: list[Request],
    concurrency: int,
    expect: int,
    callgrind_dir: Path | None = None,
) -> None:
    if callgrind_dir is not None:
        await callgrind("--zero")
    cpu0, pg0, wall0 = time.process_time(), await backend_cpu(dsn), time.perf_counter()
    await drive(label, requests, concurrency, expect)
    cpu, pg = time.process_time() - cpu0, await backend_cpu(dsn) - pg0
    wall = time.perf_counter() - wall0
    n = len(requests)
    if callgrind_dir is not None:
        await callgrind("--dump=" + label.replace(" ", "_"))
        instructions = last_dump_instructions(callgrind_dir)
        print(f"{label:<28} {instructions / n:10,.0f} instructions/request", flush=True)
        return
    print(
        f"{label:<28} {cpu / n * 1e6:8.0f} µs CPU/request (Python)  "
        f"{pg / n * 1e6:6.0f} µs (PostgreSQL)  {n / wall:7.0f} req/s sequential-ish",
        flush=True,
    )


async def run(args: argparse.Namespace, dsn: str) -> None:
    secret = secrets.token_urlsafe(48)
    admin = secrets.token_urlsafe(24)
    api_token = secrets.token_urlsafe(24)
    os.environ.update(
        {
            "SECRET_KEYS": secret,
            "BASELINE_API_TOKEN": api_token,
            "DATABASE_URL": dsn,
            "DATABASE_POOL_SIZE": str(args.pool_size),
        }
    )
    settings = Settings(
        database_url=dsn,
        secret_keys=secret,
        admin_token=admin,
        database_pool_size=args.pool_size,
    )
    service, baseline = create_service(settings), create_baseline()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(service.router.lifespan_context(service))
        await stack.enter_async_context(baseline.router.lifespan_context(baseline))
        await compare(args, dsn, service, baseline, admin, api_token)


async def compare(
    args: argparse.Namespace,
    dsn: str,
    service: Any,
    baseline: Any,
    admin: str,
    api_token: str,
) -> None:
    admin_headers = {"authorization": f"Bearer {admin}", "content-type": "application/json"}
    client = {"id": "bench", "name": "Bench", "allowed_redirects": [f"{SHOP}/"]}
    await call(service, "POST", "/v1/admin/clients", json.dumps(client).encode(), admin_headers)
    action = {"success_url": f"{SHOP}/welcome", "failure_url": f"{SHOP}/oops"}
    await call(
        service,
        "PUT",
        "/v1/admin/clients/bench/actions/go",
        json.dumps(action).encode(),
        admin_headers,
    )
    _, _, key_body = await call(service, "POST", "/v1/admin/clients/bench/keys", b"", admin_headers)
    key = json.loads(key_body)["key"]
    systems = {
        "Action Links": (service, "/v1/links", {"authorization": f"Bearer {key}"}),
        "baseline": (baseline, "/links", {"authorization": f"Bearer {api_token}"}),
    }
    for path in args.only:
        for label, (app, mint_path, auth) in systems.items():
            if args.system not in (None, label):
                continue
            headers = {**auth, "content-type": "application/json"}
            name = f"{path:<9} {label}"
            # A warm-up of a tenth as many requests, neither measured nor printed
            # (nor dumped under --callgrind): caches, pools and first-call costs.
            requests, expect = await workload(
                path, app, mint_path, headers, max(1, args.requests // 10)
            )
            await drive(name, requests, args.concurrency, expect)
            requests, expect = await workload(path, app, mint_path, headers, args.requests)
            await measure(name, dsn, requests, args.concurrency, expect, args.callgrind)


async def workload(
    path: str, app: ASGIApp, mint_path: str, headers: dict[str, str], count: int
) -> tuple[list[Request], int]:
    """``count`` requests of one hot path, and the status each must answer."""

    def request(method: str, url: str, body: bytes = b"") -> Request:
        return lambda: call(app, method, url, body, headers)

    async def mint_tokens(count: int) -> list[str]:
        tokens: list[str] = []
        while len(tokens) < count:
            body = json.dumps({"links": [MINT_BODY] * min(1000, count - len(tokens))})
            _, _, out = await request("POST", mint_path + "/batch", body.encode())()
            tokens += [link["token"] for link in json.loads(out)["links"]]
        return tokens

    if path == "mint":
        return [request("POST", mint_path, json.dumps(MINT_BODY).encode())] * count, 201
    if path == "batch":
        body = json.dumps({"links": [MINT_BODY] * 100}).encode()
        return [request("POST", mint_path + "/batch", body)] * max(1, count // 100), 201
    if path == "redeem":
        return [request("GET", f"/r/{t}") for t in await mint_tokens(count)], 303
    used = await mint_tokens(64)
    for token in used:
        await request("GET", f"/r/{token}")()
    return [request("GET", f"/r/{t}") for t in used] * max(1, count // 64), 303


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--only", default=",".join(PATHS))
    parser.add_argument("--system", choices=["Action Links", "baseline"], help="only this one")
    parser.add_argument(
        "--callgrind",
        type=Path,
        metavar="DIR",
        help="running under callgrind with --callgrind-out-file=DIR/…%%p: count instructions",
    )
    args = parser.parse_args()
    args.only = [p for p in args.only.split(",") if p]
    name = database.new_database_name("cpu")
    dsn = database.create_database(SERVER_URL, name)
    try:
        uvloop.run(run(args, dsn))
    finally:
        database.drop_database(SERVER_URL, name)


if __name__ == "__main__":
    main()
