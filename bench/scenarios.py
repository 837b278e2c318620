"""The scenarios, and how one is run: arms measured in alternation, then compared.

A scenario has *arms* (a system and a load: "Action Links, mint one link",
"baseline, mint one link") and *comparisons* between arms (a ratio of their
rates, with the issue's target when it sets one). Every round runs each arm
once, after a warm-up of its own; odd rounds run the arms in reverse order,
so a change in the machine's other load hits both sides alike.

Loads that redeem fresh links mint their tokens just before each run
(through the system's own batch endpoint), sized from the fastest rate the
arm has shown so far (``TOKEN_MARGIN``), so a run never runs out of first uses
(and says so if it did).
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import database, pgstats
from bench.machine import CpuMeter, CpuSplit, load_average
from bench.targets import Target, redeem_once
from bench.wrk import Load, WrkResult, run_wrk

# Fresh links minted per run: the arm's fastest rate so far (warm-ups and measured
# runs alike; a warm-up can be slower than the run after it) times the run's length
# times this, so that a run faster than any before it still does not run out.
TOKEN_MARGIN = 2.0
EXHAUSTED_LINKS = 64


@dataclass(frozen=True)
class Settings:
    duration: float  # seconds; under 1 s wrk is interrupted early (bench/wrk.py)
    warmup: int
    rounds: int
    connections: int
    threads: int
    workdir: Path
    first_rate_guess: float  # requests/s assumed before an arm has run at all
    profile_dir: Path | None = None  # py-spy profiles of Action Links' first runs go here
    pg_statements: bool = False  # print each run's busiest statements (bench/pgstats.py)


@dataclass
class Arm:
    label: str
    target: Target
    make_load: Callable[[float, float], Load]  # (seconds, expected rate) -> Load
    per_request: int = 1  # links per request, for batches


@dataclass(frozen=True)
class Comparison:
    label: str
    numerator: str
    denominator: str
    goal: float | None = None  # the target for the ratio, if it sets one


@dataclass
class Scenario:
    name: str
    title: str
    unit: str
    arms: list[Arm] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)


@dataclass(frozen=True)
class Run:
    result: WrkResult
    other_load: float
    load_average: float
    cpu: CpuSplit = CpuSplit()  # CPU seconds of the run: the server, its backends, wrk

    def cpu_us(self, seconds: float) -> float:
        """``seconds`` of CPU per request of this run, in µs."""
        return seconds / self.result.requests * 1e6 if self.result.requests else 0.0


@dataclass
class ArmFigures:
    label: str
    rate: float  # requests/s (links/s for batches), over all rounds
    p50_ms: float
    p99_ms: float
    runs: list[Run]

    @property
    def errors(self) -> int:
        return sum(r.result.errors + r.result.non_2xx_3xx for r in self.runs)

    @property
    def wrapped(self) -> int:
        return sum(r.result.wrapped for r in self.runs)

    @property
    def other_load(self) -> float:
        return statistics.fmean(r.other_load for r in self.runs)

    def cpu_us(self) -> CpuSplit:
        """CPU µs per request over all runs: the server's processes, its PostgreSQL
        backends (both systems' backends, of which only this arm's were busy), wrk."""
        requests = sum(r.result.requests for r in self.runs)
        if not requests:
            return CpuSplit()
        return CpuSplit(
            *(
                sum(getattr(r.cpu, name) for r in self.runs) / requests * 1e6
                for name in ("server", "backends", "load_generator")
            )
        )


@dataclass
class ScenarioFigures:
    scenario: Scenario
    arms: list[ArmFigures]
    ratios: list[tuple[Comparison, float]]


_counter = itertools.count()


def token_file(settings: Settings, paths: list[str]) -> Path:
    path = settings.workdir / f"tokens-{next(_counter)}.txt"
    path.write_text("\n".join(paths) + "\n")
    return path


def fresh_links(
    settings: Settings, target: Target, action: str = "go", webhook: bool = False
) -> Callable[[float, float], Load]:
    """A load where every request redeems a link never used before."""

    def make(seconds: float, rate: float) -> Load:
        count = int(rate * seconds * TOKEN_MARGIN) + 4 * settings.connections + 100
        tokens = target.mint_tokens(count, action)
        paths = [target.redeem_path(token, webhook) for token in tokens]
        return Load("{line}", lines=token_file(settings, paths), partition=True)

    return make


def exhausted_links(
    settings: Settings, target: Target, count: int
) -> Callable[[float, float], Load]:
    """A load cycling over ``count`` links that were used up beforehand."""
    paths = [target.redeem_path(token) for token in target.mint_tokens(count)]
    with httpx.Client(base_url=target.server.base_url, timeout=10) as http:
        for path in paths:
            redeem_once(http, path)
            if "error=used" not in redeem_once(http, path):
                raise RuntimeError(f"{target.label}: a used link does not answer error=used")
    lines = token_file(settings, paths)
    return lambda seconds, rate: Load("{line}", lines=lines, partition=False)


def fixed(load: Load) -> Callable[[float, float], Load]:
    return lambda seconds, rate: load


def _wrk(settings: Settings, arm: Arm, load: Load, seconds: float, name: str) -> WrkResult:
    return run_wrk(
        arm.target.server.base_url,
        load,
        duration_s=seconds,
        connections=settings.connections,
        threads=settings.threads,
        workdir=settings.workdir,
        name=name,
    )


def _profiler(
    settings: Settings, arm: Arm, name: str, round_: int
) -> subprocess.Popen[bytes] | None:
    """py-spy on one worker of Action Links during its first measured run, if asked."""
    if settings.profile_dir is None or round_ > 0 or not arm.label.startswith("Action Links"):
        return None
    processes = arm.target.server.memory()
    pid = next((p.pid for p in processes if p.role == "worker"), processes[0].pid)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    output = settings.profile_dir / (re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") + ".txt")
    settings.profile_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(math.ceil(settings.duration))]
        + ["--rate", "250", "--gil", "--nonblocking", "--format", "raw", "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_scenario(scenario: Scenario, settings: Settings, meter: CpuMeter) -> ScenarioFigures:
    # The fastest each arm has been (requests/s); fresh links are sized from it, or from
    # the first guess while it has shown no rate.
    fastest = {arm.label: 0.0 for arm in scenario.arms}

    def rate_of(arm: Arm) -> float:
        return fastest[arm.label] or settings.first_rate_guess

    runs: dict[str, list[Run]] = {arm.label: [] for arm in scenario.arms}
    for round_ in range(settings.rounds):
        order = scenario.arms if round_ % 2 == 0 else list(reversed(scenario.arms))
        for arm in order:
            name = f"{scenario.name}-{round_}-{len(runs[arm.label])}"
            if settings.warmup > 0:
                load = arm.make_load(settings.warmup, rate_of(arm))
                warm = _wrk(settings, arm, load, settings.warmup, name + "-warmup")
                fastest[arm.label] = max(fastest[arm.label], warm.rps)
            load = arm.make_load(settings.duration, rate_of(arm))
            # Both systems' tables analysed (autovacuum may be off), and a checkpoint, before
            # every measured run: each starts at the same point of the WAL's cycle.
            database.settle(meter.server_url, meter.databases)
            average = load_average()
            profiler = _profiler(settings, arm, f"{scenario.name}-{arm.label}", round_)
            statements = None
            if settings.pg_statements:
                statements = pgstats.StatementMeter(meter.server_url, meter.databases)
                statements.start()
            meter.start(arm.target.server)
            started = time.monotonic()
            result = _wrk(settings, arm, load, settings.duration, name)
            other = meter.stop(time.monotonic() - started)
            deltas = statements.stop() if statements is not None else []
            if profiler is not None:
                profiler.wait()
            run = Run(result, other, average, meter.split)
            runs[arm.label].append(run)
            fastest[arm.label] = max(fastest[arm.label], result.rps * (2 if result.wrapped else 1))
            rate = result.rps * arm.per_request
            print(
                f"bench:   {scenario.name:<11} {arm.label:<34} {rate:>9,.0f}"
                f" {scenario.unit}  p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms"
                f"  other load {other:.2f} cores  CPU µs/request: server"
                f" {run.cpu_us(run.cpu.server):.0f}, PostgreSQL {run.cpu_us(run.cpu.backends):.0f},"
                f" wrk {run.cpu_us(run.cpu.load_generator):.0f}",
                flush=True,
            )
            if deltas:
                print(pgstats.report(deltas, result.requests), flush=True)
    figures = [_figures(arm, runs[arm.label]) for arm in scenario.arms]
    by_label = {f.label: f for f in figures}
    ratios = [
        (c, by_label[c.numerator].rate / by_label[c.denominator].rate)
        for c in scenario.comparisons
        if by_label[c.denominator].rate > 0
    ]
    return ScenarioFigures(scenario, figures, ratios)


def _figures(arm: Arm, runs: list[Run]) -> ArmFigures:
    requests = sum(r.result.requests for r in runs)
    seconds = sum(r.result.duration_s for r in runs)
    return ArmFigures(
        label=arm.label,
        rate=requests / seconds * arm.per_request if seconds else 0.0,
        p50_ms=statistics.median(r.result.p50_ms for r in runs),
        p99_ms=statistics.median(r.result.p99_ms for r in runs),
        runs=runs,
    )
