"""Instructions per request of a whole HTTP request, in the server process.

``python -m bench.http_cpu [--requests N] [--connections C] [--only mint,batch,redeem,exhausted]``
starts Action Links (``python -m service serve --workers 1``, as operators run
it) and the baseline (``python -m bench.baseline``) each under callgrind, on
a fresh PostgreSQL database, drives a fixed number of requests at each over
real HTTP/1.1 keep-alive connections, and reports the instructions the
server process executed per request: uvicorn, the protocol, every
middleware, the app, the log line. ``bench.cpu`` measures the app alone
(in-process, no HTTP); this measures what the service adds around it too.

Instruction counts do not depend on what else runs on the machine (kernel
work is not counted), so this is the figure to compare on a shared machine.
Each path is warmed up with a tenth as many requests, then callgrind's
counters are zeroed, the requests sent and the counters dumped. What the
process does while idle (uvicorn's ticks, the service's periodic tasks) is
counted for a few seconds afterwards and subtracted for as long as the
requests took (which does depend on the load under callgrind).

The paths: ``mint`` one link, a ``batch`` of 100 (a 20th as many requests),
``redeem`` a never-used single-use link (``GET /r/<token>``, a fresh token per
request, minted beforehand through the batch endpoint) and ``exhausted``
(``GET /r/<token>`` over 64 links used up beforehand), as ``bench.run``'s
scenarios of the same names; each must answer 201 or 303 every time.

``--multiprocess`` runs the service with ``PROMETHEUS_MULTIPROC_DIR`` set, as
it is with two or more workers (metrics in shared files), while still one
process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import database
from bench.database import SERVER_URL
from bench.servers import Server, launch_baseline, launch_service, wait_until_up
from bench.targets import MINT_BODY, BaselineTarget, ServiceTarget, Target, redeem_once

PATHS = ("mint", "batch", "redeem", "exhausted")
EXHAUSTED_LINKS = 64
IDLE_SECONDS = 5.0
STARTUP_SECONDS = 600  # started uninstrumented, still several times slower


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def drive(port: int, requests: list[bytes], connections: int, expect: int) -> None:
    """Every one of ``requests`` once, shared out over ``connections`` keep-alive connections."""

    async def connection(mine: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in mine:
                status = await _one(reader, writer, request)
                if status != expect:
                    raise RuntimeError(f"answered {status}, expected {expect}")
        finally:
            writer.close()

    shares = [requests[i::connections] for i in range(connections)]
    await asyncio.gather(*(connection(share) for share in shares if share))


def raw_request(path: str, body: bytes, token: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def raw_get(path: str) -> bytes:
    """A GET as wrk sends one: the request line and the Host header."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


@dataclass(frozen=True)
class Workload:
    """One path's requests: the warm-up's, the measured ones, and the status each answers."""

    warmup: list[bytes]
    measured: list[bytes]
    expect: int


def workload(path: str, target: Target, mint_path: str, token: str, count: int) -> Workload:
    """``count`` requests of ``path`` (and a tenth as many for the warm-up), ready to send:
    links to redeem are minted, and exhausted ones used up, before anything is counted."""
    warmup = max(1, count // 10)
    if path in ("mint", "batch"):
        body = json.dumps({"links": [MINT_BODY] * 100} if path == "batch" else MINT_BODY).encode()
        request = raw_request(mint_path + ("/batch" if path == "batch" else ""), body, token)
        if path == "batch":
            count, warmup = max(1, count // 20), max(1, count // 200)
        return Workload([request] * warmup, [request] * count, 201)
    if path == "redeem":
        gets = [raw_get(target.redeem_path(t)) for t in target.mint_tokens(warmup + count)]
        return Workload(gets[:warmup], gets[warmup:], 303)
    used = [target.redeem_path(t) for t in target.mint_tokens(EXHAUSTED_LINKS)]
    with httpx.Client(base_url=target.server.base_url, timeout=STARTUP_SECONDS) as http:
        for link in used:
            redeem_once(http, link)
    gets = [raw_get(link) for link in used]
    cycle = (gets * (count // len(gets) + 1))[:count]
    return Workload(cycle[:warmup], cycle, 303)


def callgrind(command: str, pid: int) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True)


def last_dump_instructions(directory: Path, pid: int) -> int:
    dumps = [p for p in directory.glob(f"*.{pid}.*") if p.suffix[1:].isdigit()]
    newest = max(dumps, key=lambda p: int(p.suffix[1:]))
    for line in newest.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {newest}")


def measure(
    label: str, server: Server, out: Path, work: Workload, args: argparse.Namespace
) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    count = len(work.measured)
    callgrind("--instr=on", server.process.pid)
    asyncio.run(drive(port, work.warmup, args.connections, work.expect))
    callgrind("--zero", server.process.pid)
    started = time.monotonic()
    asyncio.run(drive(port, work.measured, args.connections, work.expect))
    seconds = time.monotonic() - started
    callgrind("--dump=" + label.replace(" ", "_"), server.process.pid)
    instructions = last_dump_instructions(out, server.process.pid)
    # What the process does while idle (uvicorn's ticks, the service's periodic tasks)
    # runs for as long as the requests took, which under callgrind depends on the
    # machine's load: counted for IDLE_SECONDS and subtracted pro rata.
    callgrind("--zero", server.process.pid)
    idle_started = time.monotonic()
    time.sleep(IDLE_SECONDS)
    callgrind("--dump=" + label.replace(" ", "_") + "_idle", server.process.pid)
    idle_rate = last_dump_instructions(out, server.process.pid) / (time.monotonic() - idle_started)
    per_request = (instructions - idle_rate * seconds) / count
    print(
        f"{label:<24} {per_request:12,.0f} instructions/request "
        f"({count} requests in {seconds:.0f} s under callgrind; "
        f"idle {idle_rate:,.0f}/s subtracted: {idle_rate * seconds / count:,.0f}/request)",
        flush=True,
    )


@contextmanager
def started(stack: ExitStack, server: Server) -> Iterator[Server]:
    stack.callback(server.stop)
    yield wait_until_up(server, 1, STARTUP_SECONDS)


def under_callgrind(out: Path, system: str) -> list[str]:
    """The command prefix running a server under callgrind, counting from the first request
    (``--instr-atstart=no``; turned on by ``callgrind_control``), one file per process."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}/{system}.%p",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--requests", type=int, default=2000, help="mints and redemptions; batches: a 20th"
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--only", default=",".join(PATHS))
    parser.add_argument("--system", choices=["service", "baseline"], help="only this one")
    parser.add_argument("--multiprocess", action="store_true", help="metrics as with 2+ workers")
    parser.add_argument(
        "--out", type=Path, help="where the callgrind files go (default: a temp dir)"
    )
    args = parser.parse_args()
    only = [p for p in args.only.split(",") if p]
    out = args.out or Path(tempfile.mkdtemp(prefix="http_cpu_"))
    out.mkdir(parents=True, exist_ok=True)
    name = database.new_database_name("httpcpu")
    dsn = database.create_database(SERVER_URL, name)
    common = {
        "DATABASE_URL": dsn,
        "SECRET_KEYS": secrets.token_urlsafe(48),
        "PUBLIC_BASE_URL": "https://links.example.com",
        "DATABASE_POOL_SIZE": "10",
    }
    admin, baseline_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    try:
        with ExitStack() as stack:
            if args.system in (None, "service"):
                env = {**common, "ADMIN_TOKEN": admin}
                if args.multiprocess:
                    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="http_cpu_prom_")
                launched = launch_service("service", env, 1, out, under_callgrind(out, "service"))
                with started(stack, launched) as server:
                    target = ServiceTarget("service", server, admin)
                    target.setup()
                    key = target.api_key
                    works = {p: workload(p, target, "/v1/links", key, args.requests) for p in only}
                    for path, work in works.items():
                        measure(f"{path} service", server, out, work, args)
            if args.system in (None, "baseline"):
                env = {**common, "BASELINE_API_TOKEN": baseline_token}
                wrapper = under_callgrind(out, "baseline")
                launched = launch_baseline("baseline", env, 1, out, wrapper)
                with started(stack, launched) as server:
                    plain = BaselineTarget("baseline", server, baseline_token)
                    works = {
                        p: workload(p, plain, "/links", baseline_token, args.requests) for p in only
                    }
                    for path, work in works.items():
                        measure(f"{path} baseline", server, out, work, args)
    finally:
        database.drop_database(SERVER_URL, name)
    print(f"callgrind files in {out}")


if __name__ == "__main__":
    main()
