"""A smoke run shorter than a server's first answer is run whole, not reported as 0 req/s.

``bench.run --smoke`` interrupts wrk after 0.3 s. In CI, on a loaded machine, a
cold server's first batch answers took longer than that, so wrk was stopped
before any answer and the smoke test read a rate of 0. Here a real wrk runs
against a server on 127.0.0.1 whose every answer takes 0.5 s.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.wrk import Load, WrkError, ensure_wrk, run_wrk

ANSWER_SECONDS = 0.5


class SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(ANSWER_SECONDS)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_short_run_that_saw_no_answer_is_run_whole(slow_server: str, tmp_path: Path) -> None:
    try:
        ensure_wrk()
    except WrkError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("wrk is not installed and cannot be installed here")
    result = run_wrk(
        slow_server,
        Load("/"),
        duration_s=0.2,  # over before the first answer
        connections=2,
        threads=1,
        workdir=tmp_path,
        name="slow",
    )
    assert result.requests > 0
    assert result.duration_s >= 0.9  # the whole second
    assert result.p50_ms >= ANSWER_SECONDS * 1000 * 0.9
