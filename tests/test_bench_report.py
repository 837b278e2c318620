"""``python -m bench.run``'s options and report, without running anything (no timing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.machine import CpuSplit
from bench.run import WorkerRun, parse_args, scaling_table, to_json
from bench.scenarios import ArmFigures, Comparison, Run, Scenario, ScenarioFigures
from bench.wrk import WrkResult


def test_workers_takes_a_list_and_defaults_to_two() -> None:
    assert parse_args(["--workers", "1,2"]).worker_counts == [1, 2]
    assert parse_args([]).worker_counts == [2]
    assert parse_args(["--smoke"]).worker_counts == [1]
    assert parse_args(["--smoke", "--workers", "1,2"]).worker_counts == [1, 2]
    for bad in ("0", "one", ","):
        with pytest.raises(SystemExit):
            parse_args(["--workers", bad])


def _figures(rates: tuple[float, float]) -> list[ScenarioFigures]:
    scenario = Scenario("redeem", "redeem, first use", "req/s")
    arms = []
    for label, rate in zip(("Action Links", "baseline"), rates, strict=True):
        result = WrkResult(int(rate * 10), 10.0, 1.0, 2.0, errors=0, non_2xx_3xx=0, wrapped=0)
        run = Run(result, 0.0, 0.0, CpuSplit(server=rate * 10 * 500e-6, backends=rate * 10e-4))
        arms.append(ArmFigures(label, rate, 1.0, 2.0, [run]))
    comparison = Comparison("Action Links / baseline", "Action Links", "baseline", 1.0)
    return [ScenarioFigures(scenario, arms, [(comparison, rates[0] / rates[1])])]


def test_one_table_compares_the_worker_counts_and_the_json_has_each(tmp_path: Path) -> None:
    runs = [
        WorkerRun(1, _figures((1000.0, 2000.0)), {}),
        WorkerRun(2, _figures((1500.0, 3000.0)), {}),
    ]
    table = scaling_table(runs)
    assert "| scenario | system | 1 worker | 2 workers | 2 / 1 |" in table
    assert "| redeem, first use | Action Links | 1,000 | 1,500 | 1.50× |" in table
    report = to_json(parse_args(["--workers", "1,2"]), {}, runs)
    assert [r["workers"] for r in report["runs"]] == [1, 2]
    arm = report["runs"][0]["scenarios"][0]["arms"][0]
    assert arm["cpu_us_per_request"]["server"] == pytest.approx(500.0)
    assert arm["cpu_us_per_request"]["backends"] == pytest.approx(100.0)
