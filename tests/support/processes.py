"""Real ``action-links serve`` processes on 127.0.0.1, as operators run them."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def healthy(base_url: str) -> bool:
    """``GET /healthz`` answers 200. Plain ``http.client``: each ``httpx.get`` builds a
    client and its TLS context, ~40 ms of CPU, and the polls of a fleet starting up
    took a core from the processes they waited for."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=1)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def wait_until_healthy(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}:\n{log_path.read_text()}")
        if healthy(base_url):
            return
        time.sleep(0.05)
    raise RuntimeError(f"service did not become healthy:\n{log_path.read_text()}")


@contextmanager
def running_command(
    command: list[str],
    env: dict[str, str],
    log_dir: Path,
    port: int,
    cwd: Path | None = None,
) -> Iterator[ServiceProcess]:
    """Any command that serves HTTP on ``port``, until the block ends (then SIGTERM).

    Its output goes to ``log_dir/service-<port>.log``; a session-level check
    (``tests.support.logcheck``) greps every such file for secrets. Service
    processes log at DEBUG unless ``env`` or the caller's environment says otherwise.
    """
    log_path = log_dir / f"service-{port}.log"
    full_env = {"LOG_LEVEL": "debug", **os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=full_env, cwd=cwd or REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process, log_path)
        yield ServiceProcess(process, base_url, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_service(
    env: dict[str, str],
    log_dir: Path,
    *args: str,
    cwd: Path | None = None,
) -> Iterator[ServiceProcess]:
    """``python -m service serve`` (the ``action-links`` entry point) until the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "service", "serve", "--port", str(port), *args]
    with running_command(command, env, log_dir, port, cwd=cwd) as service:
        yield service
