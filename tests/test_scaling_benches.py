"""The scripts behind the README's "Scaling" figures, small, so that they keep working:
bench/audit_retention.py (batched purge vs partition drop) and bench/through_pooler.py
(claims and purges through a connection pooler; here straight to PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.support.processes import REPO_ROOT


def bench(module: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    output: dict[str, Any] = json.loads(result.stdout)
    return output


@pytest.mark.slow
def test_audit_retention_bench_keeps_the_live_rows_either_way(database_url: str) -> None:
    """Both ways remove every expired redemption and keep every recent one."""
    rows, live = 3000, 200
    output = bench(
        "bench.audit_retention",
        *("--database-url", database_url, "--rows", str(rows), "--live", str(live)),
        *("--batch-size", "1000"),
    )
    deleted, dropped = output["batched_delete"], output["partition_drop"]
    assert (deleted["deleted"], deleted["left"]) == (rows, live)
    assert deleted["batches"] >= rows // 1000
    assert dropped["left"] == live
    assert dropped["partition_bytes"] > 0


@pytest.mark.slow
def test_every_claim_and_purge_succeeds_without_a_pooler(database_url: str) -> None:
    output = bench("bench.through_pooler", "--database-url", database_url, "--claims", "60")
    assert output["outcomes"] == {"claimed": 60}
    assert output["purges"] == ["ran", "ran", "ran"]
