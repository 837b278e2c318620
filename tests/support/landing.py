"""A client's landing pages on 127.0.0.1: where links send people after redemption.

A stdlib HTTP server in a thread, on its own port, so it is another origin
than the service (as a real client's site is). It answers every GET with a
small page and remembers the paths it was asked for.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: LandingServer

    def do_GET(self) -> None:
        self.server.visits.append(self.path)
        body = b'<!doctype html><html lang="en"><title>Landing</title><h1>Welcome back</h1></html>'
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest output is no place for access logs."""


class LandingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.visits: list[str] = []
        # Polled every 50 ms (not 0.5 s): ``close`` waits for the loop to notice.
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> LandingServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
