"""The benchmark's fresh links are sized from an arm's fastest rate, not its last warm-up.

A warm-up (2 s, cold caches) can be much slower than the run after it; sized
from the warm-up alone, the one-worker first-use arm ran out of fresh links
and measured refusals among its first uses (bench/README.md, "Redemption,
third round"). No server, wrk or database here: ``run_scenario`` with those
replaced, checking what each run's load was sized for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import database, scenarios
from bench.machine import CpuSplit
from bench.scenarios import Arm, Scenario, Settings, run_scenario
from bench.wrk import Load, WrkResult

WARM_RPS, MEASURED_RPS = 1000.0, 3000.0


class QuietMeter:
    server_url = "postgresql://unused"
    databases: list[str] = []
    split = CpuSplit()

    def start(self, measured: object = None) -> None:
        pass

    def stop(self, wall_seconds: float) -> float:
        return 0.0


def test_each_run_is_sized_from_the_fastest_rate_the_arm_has_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asked: list[tuple[float, float]] = []  # (seconds, rate) of every load made

    def make_load(seconds: float, rate: float) -> Load:
        asked.append((seconds, rate))
        return Load("/r/x")

    def wrk(settings: Settings, arm: Arm, load: Load, seconds: float, name: str) -> WrkResult:
        rps = WARM_RPS if name.endswith("-warmup") else MEASURED_RPS
        return WrkResult(int(rps * seconds), seconds, 1.0, 2.0, 0, 0, 0)

    monkeypatch.setattr(scenarios, "_wrk", wrk)
    monkeypatch.setattr(database, "settle", lambda *args: None)
    monkeypatch.setattr(scenarios, "load_average", lambda: 0.0)
    target: Any = type("FakeTarget", (), {"server": None})()
    scenario = Scenario("redeem", "redeem, first use", "req/s", [Arm("AL", target, make_load)])
    settings = Settings(5.0, 2, 2, 64, 2, tmp_path, first_rate_guess=500.0)
    run_scenario(scenario, settings, QuietMeter())  # type: ignore[arg-type]
    # Round 1: the guess for the warm-up, then the warm-up's rate; round 2: the measured
    # run's 3,000 for both, although its own warm-up again ran at 1,000.
    assert [rate for _, rate in asked] == [500.0, WARM_RPS, MEASURED_RPS, MEASURED_RPS]
    assert scenarios.TOKEN_MARGIN >= 2.0
