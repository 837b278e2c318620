"""The processes under test: the service, the baseline, the webhook receiver.

Each runs as its own process group on a free port of 127.0.0.1 and is
stopped with SIGTERM (SIGKILL after a grace period) when the benchmark ends.
Peak memory is read from ``/proc/<pid>/status`` (``VmHWM``, the high-water
mark of the resident set) of the supervisor and of every worker it spawned,
while they still run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pids_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes so far (``/proc/<pid>/stat``).

    Processes that have exited meanwhile count as 0.
    """
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    role: str  # "main" (uvicorn's supervisor, or the only process), "worker", "helper"
    peak_rss_mb: float


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    health: str  # the path answering 200 once it is up
    _terminated: bool = False

    def tree(self) -> list[int]:
        """The main process and every descendant, found through /proc."""
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        found = [self.process.pid]
        for pid in found:
            found.extend(child for child, parent in parents.items() if parent == pid)
        return found

    def memory(self) -> list[ProcessMemory]:
        result = []
        for pid in self.tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            peak = next(
                (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")),
                0,
            )
            if pid == self.process.pid:
                role = "main"
            elif b"spawn_main" in cmdline:
                role = "worker"
            else:
                role = "helper"
            result.append(ProcessMemory(pid, role, peak / 1024))
        return result

    def terminate(self) -> None:
        """SIGTERM to the process group, once, without waiting (``stop`` waits)."""
        if self.process.poll() is None and not self._terminated:
            self._terminated = True
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def launch(
    name: str,
    module: str,
    args: list[str],
    env: dict[str, str],
    log_dir: Path,
    health: str,
    wrapper: Sequence[str] = (),
) -> Server:
    """Start ``python -m module`` on a free port; ``wait_until_up`` tells when it answers.

    ``wrapper``: a command to run it under (``valgrind --tool=callgrind …``)."""
    port = free_port()
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
    command = [*wrapper, sys.executable, "-m", module, *args, "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=full_env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, process, f"http://127.0.0.1:{port}", log_path, health)


def wait_until_up(server: Server, workers: int = 1, timeout: float = 60) -> Server:
    """Wait until ``server`` answers its health check, and all its workers are running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n"
                f"{server.log_path.read_text()}"
            )
        try:
            if httpx.get(server.base_url + server.health, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        server.stop()
        raise RuntimeError(f"{server.name} did not come up:\n{server.log_path.read_text()}")
    # With several workers uvicorn answers as soon as one is up; wait for all of them.
    while workers > 1 and time.monotonic() < deadline:
        if sum(1 for m in server.memory() if m.role == "worker") >= workers:
            break
        time.sleep(0.1)
    return server


def launch_service(
    name: str, env: dict[str, str], workers: int, log_dir: Path, wrapper: Sequence[str] = ()
) -> Server:
    """``python -m service serve --workers W``, exactly as operators run it."""
    args = ["serve", "--workers", str(workers)]
    return launch(name, "service", args, env, log_dir, "/healthz", wrapper)


def launch_baseline(
    name: str, env: dict[str, str], workers: int, log_dir: Path, wrapper: Sequence[str] = ()
) -> Server:
    args = ["--workers", str(workers)]
    return launch(name, "bench.baseline", args, env, log_dir, "/healthz", wrapper)


def launch_receiver(log_dir: Path) -> Server:
    return launch("receiver", "bench.receiver", [], {}, log_dir, "/count")
