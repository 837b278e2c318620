"""Instructions per request of a whole HTTP request, in the server process.

``python -m bench.http_cpu [--requests N] [--connections C] [--only mint,batch]``
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
from pathlib import Path

from bench import database
from bench.database import SERVER_URL
from bench.servers import Server, launch_baseline, launch_service, wait_until_up
from bench.targets import MINT_BODY, ServiceTarget

PATHS = ("mint", "batch")
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


async def drive(port: int, request: bytes, count: int, connections: int, expect: int) -> None:
    """``count`` copies of ``request``, over ``connections`` keep-alive connections."""
    per = [count // connections + (i < count % connections) for i in range(connections)]

    async def connection(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                status = await _one(reader, writer, request)
                if status != expect:
                    raise RuntimeError(f"answered {status}, expected {expect}")
        finally:
            writer.close()

    await asyncio.gather(*(connection(n) for n in per if n))


def raw_request(path: str, body: bytes, token: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


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
    label: str,
    server: Server,
    out: Path,
    path: str,
    body: bytes,
    token: str,
    args: argparse.Namespace,
) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    request = raw_request(path, body, token)
    count = args.requests if "batch" not in path else max(1, args.requests // 20)
    warmup = max(1, count // 10)
    callgrind("--instr=on", server.process.pid)
    asyncio.run(drive(port, request, warmup, args.connections, 201))
    callgrind("--zero", server.process.pid)
    started = time.monotonic()
    asyncio.run(drive(port, request, count, args.connections, 201))
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
    parser.add_argument("--requests", type=int, default=2000, help="mints; batches: a 20th")
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
    mint = json.dumps(MINT_BODY).encode()
    batch = json.dumps({"links": [MINT_BODY] * 100}).encode()
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
                    for path in only:
                        url, body = (
                            ("/v1/links", mint) if path == "mint" else ("/v1/links/batch", batch)
                        )
                        measure(f"{path} service", server, out, url, body, target.api_key, args)
            if args.system in (None, "baseline"):
                env = {**common, "BASELINE_API_TOKEN": baseline_token}
                wrapper = under_callgrind(out, "baseline")
                launched = launch_baseline("baseline", env, 1, out, wrapper)
                with started(stack, launched) as server:
                    for path in only:
                        url, body = ("/links", mint) if path == "mint" else ("/links/batch", batch)
                        measure(f"{path} baseline", server, out, url, body, baseline_token, args)
    finally:
        database.drop_database(SERVER_URL, name)
    print(f"callgrind files in {out}")


if __name__ == "__main__":
    main()
