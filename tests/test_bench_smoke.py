"""The benchmark command runs and produces figures (never a gate on speed).

``python -m bench.run --smoke`` starts both systems with one worker each,
runs a few scenarios for 0.3 s each against both (wrk interrupted early, as
Ctrl-C does: it still reports), and writes its figures as JSON. The
scenarios here are every one with code of its own: fixed requests (batch,
inspect), links used up beforehand (exhausted), fresh links through the
async webhook action and the receiver (webhook), and fresh links on empty
tables and on history loaded straight into the current schema (growth). The
three left out add no code path: mint is batch's fixed request with one link
in its body, redeem is the same load as growth's "empty" arms, and contention
is exhausted's load (with one link as well as 64) in a four-arm scenario like
growth.

With ``--pg-statements`` each measured run also prints its busiest statements
per call, when the server loads ``pg_stat_statements`` (and nothing without it).

Every arm must have answered without a connection error or an unexpected
status, and no fresh-link run may have run out of links (``wrapped``): the
smoke run sizes its first links for 6,000 requests/s, well above what one
worker redeems. Every arm's server must have spent CPU on it, and the report's
table and JSON must hold every scenario: a scenario that breaks, or a report
that drops one, fails here.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.database import fetchval
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.slow

SCENARIOS = "batch,exhausted,webhook,inspect,growth"


def test_bench_smoke_produces_figures(postgres_url: str, tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    server_url = postgres_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0]
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--scenarios", SCENARIOS]
        + ["--json", str(figures), "--pg-statements"],
        cwd=REPO_ROOT,
        env={**os.environ, "BENCH_POSTGRES_URL": f"{server_url}/postgres"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "wrk is not installed" in completed.stderr and os.environ.get("CI") != "true":
        pytest.skip("wrk is not installed and cannot be installed here")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "| scenario | system |" in completed.stdout
    if "pg_stat_statements" in _preloaded(f"{server_url}/postgres"):
        assert "calls/req" in completed.stdout
        assert "INSERT INTO baseline_redemptions" in completed.stdout
    [report] = json.loads(figures.read_text())["runs"]
    assert report["workers"] == 1
    assert [s["name"] for s in report["scenarios"]] == SCENARIOS.split(",")
    for scenario in report["scenarios"]:
        labels = " ".join(arm["label"] for arm in scenario["arms"])
        assert "Action Links" in labels, scenario["name"]
        assert "baseline" in labels, scenario["name"]
        for arm in scenario["arms"]:
            assert arm["rate"] > 0, (scenario["name"], arm)
            assert arm["p99_ms"] >= arm["p50_ms"] > 0, (scenario["name"], arm)
            assert arm["errors"] == 0, (scenario["name"], arm)
            assert arm["wrapped"] == 0, (scenario["name"], arm)
            assert arm["cpu_us_per_request"]["server"] > 0, (scenario["name"], arm)
        assert scenario["ratios"], scenario["name"]
    assert report["memory"]
    for name, processes in report["memory"].items():
        assert processes, name
        assert all(p["peak_rss_mb"] > 0 for p in processes), name


def _preloaded(url: str) -> str:
    return str(asyncio.run(fetchval(url, "SHOW shared_preload_libraries")))
