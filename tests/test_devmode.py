"""``serve --dev`` on a fresh directory and a terminal: SQLite, generated secrets, readable
log lines, and a demo link that redeems.

One process, as a newcomer starts it: no setting in its environment, its
output on a terminal (a pty), which is what switches the logs to lines a
person reads.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port
from tests.test_first_run import clean_environment

pytestmark = pytest.mark.slow


def read_until(fd: int, pattern: str, seconds: float) -> str:
    """What a terminal shows until ``pattern`` appears."""
    seen = ""
    deadline = time.monotonic() + seconds
    while pattern not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{pattern!r} never appeared in:\n{seen}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen += os.read(fd, 65536).decode(errors="replace")
            except OSError:  # the other end closed: the process is gone
                break
    return seen


def test_dev_mode_on_a_terminal_logs_readable_lines_and_its_demo_link_redeems(
    tmp_path: Path,
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    controller, terminal = pty.openpty()
    env = clean_environment(LOG_LEVEL="info")
    del env["SECRET_KEYS"]
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--dev", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    try:
        screen = read_until(controller, "Application startup complete", 90)
        key = re.search(r"API key:\s+(alk_\S+)", screen)
        assert key, screen
        curl = re.search(r"curl -s -X POST (\S+) -H 'Authorization: Bearer (\S+)'", screen)
        assert curl, screen
        minted = httpx.post(
            curl.group(1),
            json={"action": "welcome", "subject": "42"},
            headers={"Authorization": f"Bearer {curl.group(2)}"},
        )
        assert minted.status_code == 201, minted.text
        url = minted.json()["url"]
        assert url.startswith(base_url)
        redeemed = httpx.get(url)
        assert redeemed.status_code == 303
        assert "redemption_id=" in redeemed.headers["location"]
        landing = httpx.get(redeemed.headers["location"])
        assert landing.status_code == 200
        assert "Link redeemed" in landing.text
        again = httpx.get(url)
        assert "error=used" in again.headers["location"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        os.close(controller)
    assert f"API docs:     {base_url}/docs" in screen
    started = next(line for line in screen.splitlines() if "starting on" in line)
    assert not started.lstrip().startswith("{"), started
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z INFO\s+service\.cli: starting on", started)
    assert "Traceback" not in screen
    assert (tmp_path / "action-links.db").exists()
    state = json.loads((tmp_path / ".action-links-dev.json").read_text())
    assert state["demo_api_key"] == key.group(1)
