"""The benchmark, in one command: ``python -m bench.run [options]`` (see bench/README.md).

It installs wrk if it is missing, starts PostgreSQL if it is down, creates a
fresh database, migrates it, starts Action Links (``python -m service serve
--workers W``) and the baseline (``bench/baseline.py``, the same worker count)
against it, runs every scenario against both in alternation after a warm-up,
and prints requests/s, p50, p99, CPU per request (the server's, its PostgreSQL
backends') and the ratio Action Links / baseline, then the issue's targets met
or missed. ``--workers 1,2`` does all of it once per worker count, each on
fresh databases and fresh servers, a table per count and a last one comparing
the counts. Everything it started is stopped and its
databases dropped at the end, except the growth scenario's history, kept as a
template for the next run unless ``--no-history-cache`` (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import database
from bench.database import SERVER_URL, log
from bench.machine import CpuMeter, machine_info
from bench.scenarios import (
    EXHAUSTED_LINKS,
    Arm,
    Comparison,
    Scenario,
    ScenarioFigures,
    Settings,
    exhausted_links,
    fixed,
    fresh_links,
    run_scenario,
    token_file,
)
from bench.servers import (
    ProcessMemory,
    Server,
    launch_baseline,
    launch_receiver,
    launch_service,
    wait_until_up,
)
from bench.targets import BaselineTarget, ServiceTarget
from bench.wrk import Load, ensure_wrk

SCENARIOS = (
    "mint",
    "batch",
    "redeem",
    "exhausted",
    "contention",
    "webhook",
    "inspect",
    "growth",
)
BATCH_SIZE = 100
INSPECT_TOKENS = 1000
AL, BL = "Action Links", "baseline"
PUBLIC_BASE_URL = "https://links.example.com"
RSS_LIMIT_MB = 100.0  # per worker (issue 17); the supervisor is reported, not held to it
BATCH_GOAL = 80_000.0  # links/s at two workers (issue 17)
BATCH_GOAL_WORKERS = 2
CONTENTION_TOLERANCE = 0.95  # "not slower", within the noise of two equal paths
# A smoke run's measured runs: long enough for a few hundred requests per arm and CPU
# times well above the clock tick, short enough that 12 arms take a few seconds.
SMOKE_DURATION = 0.3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10,
        help="seconds per measured run (under 1 s wrk is interrupted early, bench/wrk.py)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per system")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--workers",
        default="2",
        help="worker processes per system; a comma-separated list (1,2) runs each in turn",
    )
    parser.add_argument(
        "--pool-size", type=int, default=10, help="DATABASE_POOL_SIZE (connections per worker)"
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--growth-rows", type=int, default=10_000_000, help="rows of history for growth"
    )
    parser.add_argument(
        "--no-history-cache",
        action="store_true",
        help="do not keep the loaded history as a template database for the next run",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record py-spy profiles (collapsed stacks) of one Action Links worker into DIR",
    )
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="print each run's busiest statements per call (needs pg_stat_statements loaded)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a few seconds in all: {SMOKE_DURATION:g} s runs, no warm-up, 1 worker, "
        "2,000 rows of history",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.rounds = SMOKE_DURATION, 0, 1
        args.connections, args.threads, args.pool_size = 8, 1, 3
        args.growth_rows, args.no_history_cache = 2000, True
        if args.workers == parser.get_default("workers"):
            args.workers = "1"
    try:
        args.worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers: not a comma-separated list of numbers: {args.workers}")
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers: at least one count, each 1 or more")
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


@dataclass
class Bench:
    """Everything one invocation started, so all of it is stopped and dropped at the end."""

    args: argparse.Namespace
    stack: ExitStack
    workdir: Path
    workers: int
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    baseline_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    databases: list[str] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    schema: str | None = None  # an empty migrated database, copied for each run
    created: list[str] = field(default_factory=list)  # every database to drop at the end

    @property
    def settings(self) -> Settings:
        a = self.args
        # Smoke runs have no warm-up, so the first run's fresh links are sized from
        # this guess alone. One worker redeems at most a few thousand links/s even on
        # a fast core (~300 µs of Python CPU per first use, bench/README.md), and a
        # smoke run's 8 connections fewer, so 6,000 (2,700 links per 0.3 s run with
        # TOKEN_MARGIN, enough for the 0.1 s wrk may take to stop after SIGINT) never
        # runs out; the smoke test asserts that no run wrapped.
        guess = 6000.0 if a.smoke else 4000.0
        return Settings(
            a.duration,
            a.warmup,
            a.rounds,
            a.connections,
            a.threads,
            self.workdir,
            guess,
            a.profile,
            a.pg_statements,
        )

    def meter(self) -> CpuMeter:
        return CpuMeter(SERVER_URL, self.databases, self.servers)

    def database(self, label: str, history_rows: int = 0) -> str:
        """A fresh database: a copy of one migrated once, plus history if asked."""
        if self.schema is None:
            self.schema = database.new_database_name("schema")
            self.created.append(self.schema)
            database.create_database(SERVER_URL, self.schema)
        name = database.new_database_name(label)
        self.databases.append(name)
        self.created.append(name)
        if history_rows:
            keep = not self.args.no_history_cache
            return database.create_history_database(
                SERVER_URL, name, history_rows, keep, self.schema
            )
        return database.create_database(SERVER_URL, name, template=self.schema)

    def _launched(self, server: Server) -> Server:
        self.servers.append(server)  # stopped by ``close``
        return server

    def close(self) -> None:
        """Stop every server, side by side (all are told first), then drop the databases."""
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            server.stop()
        database.drop_databases(SERVER_URL, self.created)

    def systems(
        self, label: str, dsn: str, webhook_url: str | None
    ) -> tuple[ServiceTarget, BaselineTarget]:
        """Action Links and the baseline on database ``dsn``, started side by side."""
        common = {
            "DATABASE_URL": dsn,
            "SECRET_KEYS": self.secret_key,
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "DATABASE_POOL_SIZE": str(self.args.pool_size),
        }
        workers = self.workers
        service_env = {**common, "ADMIN_TOKEN": self.admin_token}
        baseline_env = {**common, "BASELINE_API_TOKEN": self.baseline_token}
        if webhook_url is not None:
            baseline_env["WEBHOOK_URL"] = webhook_url
        service = self._launched(
            launch_service(f"service-{label}", service_env, workers, self.workdir)
        )
        baseline = self._launched(
            launch_baseline(f"baseline-{label}", baseline_env, workers, self.workdir)
        )
        wait_until_up(service, workers)
        wait_until_up(baseline, workers)
        service_target = ServiceTarget(label, service, self.admin_token, webhook_url)
        service_target.setup()
        return service_target, BaselineTarget(label, baseline, self.baseline_token)

    def receiver(self) -> Server:
        """The webhook receiver, starting: ``wait_until_up`` before sending it anything."""
        return self._launched(launch_receiver(self.workdir))


def pair_scenario(
    name: str,
    title: str,
    service: ServiceTarget,
    baseline: BaselineTarget,
    make: Callable[[ServiceTarget | BaselineTarget], Callable[[float, float], Load]],
    goal: float | None = 1.0,
    unit: str = "req/s",
    per_request: int = 1,
) -> Scenario:
    return Scenario(
        name,
        title,
        unit,
        arms=[
            Arm(AL, service, make(service), per_request),
            Arm(BL, baseline, make(baseline), per_request),
        ],
        comparisons=[Comparison(f"{AL} / baseline", AL, BL, goal)],
    )


def build_scenarios(
    bench: Bench, service: ServiceTarget, baseline: BaselineTarget
) -> Iterator[Scenario]:
    """The scenarios asked for, each prepared just before it runs."""
    s = bench.settings
    wanted = bench.args.scenarios
    if "mint" in wanted:
        yield pair_scenario(
            "mint", "mint one link", service, baseline, lambda t: fixed(t.mint_load())
        )
    if "batch" in wanted:
        yield pair_scenario(
            "batch",
            f"mint in batches of {BATCH_SIZE}",
            service,
            baseline,
            lambda t: fixed(t.batch_load(BATCH_SIZE)),
            goal=None,
            unit="links/s",
            per_request=BATCH_SIZE,
        )
    if "redeem" in wanted:
        yield pair_scenario(
            "redeem", "redeem, first use", service, baseline, lambda t: fresh_links(s, t)
        )
    if "exhausted" in wanted:
        yield pair_scenario(
            "exhausted",
            f"redeem, exhausted ({EXHAUSTED_LINKS} links)",
            service,
            baseline,
            lambda t: exhausted_links(s, t, EXHAUSTED_LINKS),
        )
    if "contention" in wanted:
        yield Scenario(
            "contention",
            f"exhausted: one link vs {EXHAUSTED_LINKS} links, {s.connections} connections",
            "req/s",
            arms=[
                Arm(f"{AL}, one link", service, exhausted_links(s, service, 1)),
                Arm(
                    f"{AL}, {EXHAUSTED_LINKS} links",
                    service,
                    exhausted_links(s, service, EXHAUSTED_LINKS),
                ),
                Arm(f"{BL}, one link", baseline, exhausted_links(s, baseline, 1)),
                Arm(
                    f"{BL}, {EXHAUSTED_LINKS} links",
                    baseline,
                    exhausted_links(s, baseline, EXHAUSTED_LINKS),
                ),
            ],
            comparisons=[
                Comparison(
                    f"{AL}: one / {EXHAUSTED_LINKS}",
                    f"{AL}, one link",
                    f"{AL}, {EXHAUSTED_LINKS} links",
                    CONTENTION_TOLERANCE,
                ),
                Comparison(
                    f"{BL}: one / {EXHAUSTED_LINKS}",
                    f"{BL}, one link",
                    f"{BL}, {EXHAUSTED_LINKS} links",
                ),
            ],
        )
    if "webhook" in wanted:
        yield pair_scenario(
            "webhook",
            "redeem, async webhook, receiver up",
            service,
            baseline,
            lambda t: fresh_links(s, t, "hook" if t is service else "go", webhook=True),
            goal=None,
        )
    if "inspect" in wanted:
        yield pair_scenario(
            "inspect",
            "inspect a token",
            service,
            baseline,
            lambda t: fixed(t.inspect_load(token_file(s, t.mint_tokens(INSPECT_TOKENS)))),
            goal=None,
        )
    if "growth" in wanted:
        yield growth_scenario(bench, service, baseline)


def growth_scenario(bench: Bench, service: ServiceTarget, baseline: BaselineTarget) -> Scenario:
    """First uses on empty tables vs on tables holding ``--growth-rows`` rows of history."""
    rows = bench.args.growth_rows
    size = f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows:,}"
    database.truncate_history(database.dsn_for(SERVER_URL, bench.databases[0]))
    dsn = bench.database("history", history_rows=rows)
    grown_service, grown_baseline = bench.systems("history", dsn, None)
    s = bench.settings
    return Scenario(
        "growth",
        f"redeem, first use: empty tables vs {size} rows",
        "req/s",
        arms=[
            Arm(f"{AL}, empty", service, fresh_links(s, service)),
            Arm(f"{AL}, {size} rows", grown_service, fresh_links(s, grown_service)),
            Arm(f"{BL}, empty", baseline, fresh_links(s, baseline)),
            Arm(f"{BL}, {size} rows", grown_baseline, fresh_links(s, grown_baseline)),
        ],
        comparisons=[
            Comparison(f"{AL}: {size} / empty", f"{AL}, {size} rows", f"{AL}, empty", 0.9),
            Comparison(f"{BL}: {size} / empty", f"{BL}, {size} rows", f"{BL}, empty"),
        ],
    )


# --- report ------------------------------------------------------------------


@dataclass
class WorkerRun:
    """Everything measured at one worker count."""

    workers: int
    results: list[ScenarioFigures]
    memory: dict[str, list[ProcessMemory]]


def _ratio_text(value: float, goal: float | None) -> str:
    if goal is None:
        return f"{value:.2f}×"
    verdict = "met" if value >= goal else f"missed by {(goal - value) / goal:.0%}"
    return f"{value:.2f}× (target ≥ {goal:g}×: {verdict})"


def figures_table(results: list[ScenarioFigures]) -> str:
    lines = [
        "| scenario | system | rate | p50 ms | p99 ms | CPU µs/req: server | PostgreSQL "
        "| other load (cores) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        scenario = result.scenario
        for arm in result.arms:
            notes = []
            if arm.wrapped:
                notes.append(f"ran out of fresh links {arm.wrapped}×")
            if arm.errors:
                notes.append(f"{arm.errors} errors")
            label = arm.label + (f" ({'; '.join(notes)})" if notes else "")
            cpu = arm.cpu_us()
            lines.append(
                f"| {scenario.title} | {label} | {arm.rate:,.0f} {scenario.unit} | "
                f"{arm.p50_ms:.1f} | {arm.p99_ms:.1f} | {cpu.server:.0f} | {cpu.backends:.0f} | "
                f"{arm.other_load:.2f} |"
            )
        for comparison, value in result.ratios:
            text = _ratio_text(value, comparison.goal)
            lines.append(f"| {scenario.title} | **{comparison.label}** | **{text}** | | | | | |")
    return "\n".join(lines)


def targets_summary(
    results: list[ScenarioFigures], memory: dict[str, list[ProcessMemory]], workers: int
) -> str:
    lines = []
    by_name = {r.scenario.name: r for r in results}
    if "batch" in by_name:
        rate = by_name["batch"].arms[0].rate
        if workers == BATCH_GOAL_WORKERS:
            verdict = "met" if rate >= BATCH_GOAL else f"missed by {1 - rate / BATCH_GOAL:.0%}"
            lines.append(
                f"- batches: {rate:,.0f} links/s (target ≥ {BATCH_GOAL:,.0f} at "
                f"{BATCH_GOAL_WORKERS} workers: {verdict})"
            )
        else:
            lines.append(
                f"- batches: {rate:,.0f} links/s (the target is for {BATCH_GOAL_WORKERS} workers)"
            )
    if "redeem" in by_name:
        al, bl = by_name["redeem"].arms
        verdict = "met" if al.p99_ms <= bl.p99_ms else f"missed by {al.p99_ms / bl.p99_ms - 1:.0%}"
        lines.append(
            f"- redeem p99: {al.p99_ms:.1f} ms vs baseline {bl.p99_ms:.1f} ms "
            f"(target ≤ baseline: {verdict})"
        )
    for result in results:
        for comparison, value in result.ratios:
            if comparison.goal is not None:
                lines.append(
                    f"- {result.scenario.title}, {comparison.label}: "
                    f"{_ratio_text(value, comparison.goal)}"
                )
    for name, processes in memory.items():
        if not processes:
            continue
        # The processes that serve requests: the workers, or the one process without them.
        serving = [p for p in processes if p.role == "worker"] or [
            p for p in processes if p.role == "main"
        ]
        peak = max(p.peak_rss_mb for p in serving)
        verdict = "met" if peak <= RSS_LIMIT_MB else f"missed by {peak / RSS_LIMIT_MB - 1:.0%}"
        detail = ", ".join(f"{p.role} {p.peak_rss_mb:.0f}" for p in processes)
        lines.append(
            f"- peak RSS {name}: {detail} MB (target ≤ {RSS_LIMIT_MB:.0f} MB per worker: {verdict})"
        )
    return "\n".join(lines)


def scaling_table(runs: list[WorkerRun]) -> str:
    """Each arm's rate at every worker count, and the last count's over the first's."""
    counts = [run.workers for run in runs]
    header = " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in counts)
    lines = [
        f"| scenario | system | {header} | {counts[-1]} / {counts[0]} |",
        ("| --- | --- | " + "---: | " * (len(counts) + 1)).rstrip(),
    ]
    for index, result in enumerate(runs[0].results):
        for arm_index, arm in enumerate(result.arms):
            rates = [run.results[index].arms[arm_index].rate for run in runs]
            change = f"{rates[-1] / rates[0]:.2f}×" if rates[0] else "–"
            cells = " | ".join(f"{rate:,.0f}" for rate in rates)
            lines.append(f"| {result.scenario.title} | {arm.label} | {cells} | {change} |")
    return "\n".join(lines)


def _scenarios_json(results: list[ScenarioFigures]) -> list[dict[str, Any]]:
    return [
        {
            "name": r.scenario.name,
            "title": r.scenario.title,
            "unit": r.scenario.unit,
            "arms": [
                {
                    "label": a.label,
                    "rate": a.rate,
                    "p50_ms": a.p50_ms,
                    "p99_ms": a.p99_ms,
                    "other_load": a.other_load,
                    "errors": a.errors,
                    "wrapped": a.wrapped,
                    "cpu_us_per_request": asdict(a.cpu_us()),
                    "runs": [asdict(run) for run in a.runs],
                }
                for a in r.arms
            ],
            "ratios": [{"label": c.label, "value": v, "goal": c.goal} for c, v in r.ratios],
        }
        for r in results
    ]


def to_json(
    args: argparse.Namespace, machine: dict[str, str], runs: list[WorkerRun]
) -> dict[str, Any]:
    """``runs``: one entry per worker count, in the order run."""
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine,
        "runs": [
            {
                "workers": run.workers,
                "scenarios": _scenarios_json(run.results),
                "memory": {name: [asdict(p) for p in ps] for name, ps in run.memory.items()},
            }
            for run in runs
        ],
    }


# --- main --------------------------------------------------------------------


@contextmanager
def bench_context(args: argparse.Namespace, workers: int) -> Iterator[Bench]:
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="al-bench-"))
        stack.callback(shutil.rmtree, workdir, True)
        bench = Bench(args, stack, workdir, workers)
        stack.callback(bench.close)
        yield bench


def run_workers(args: argparse.Namespace, workers: int) -> WorkerRun:
    """Every scenario asked for, at one worker count, on fresh databases and servers."""
    with bench_context(args, workers) as bench:
        log(
            f"{workers} worker(s) per system, {args.connections} connections, "
            f"{args.rounds} round(s) of {args.duration:g} s after {args.warmup} s of warm-up"
        )
        receiver = bench.receiver()  # starts while the database is migrated
        webhook_url = f"{receiver.base_url}/hook"
        dsn = bench.database("main")
        wait_until_up(receiver)
        service, baseline = bench.systems("main", dsn, webhook_url)
        log("both systems are up")
        results: list[ScenarioFigures] = []
        for scenario in build_scenarios(bench, service, baseline):
            log(f"scenario {scenario.name}: {scenario.title} (preparing)")
            results.append(run_scenario(scenario, bench.settings, bench.meter()))
        memory = {
            server.name: server.memory() for server in bench.servers if server.name != "receiver"
        }
        _check_alive(bench.servers)
    return WorkerRun(workers, results, memory)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_wrk()
    database.ensure_postgres(SERVER_URL)
    machine = machine_info(SERVER_URL)
    started = time.monotonic()
    runs = [run_workers(args, workers) for workers in args.worker_counts]
    print()
    print(
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory']}, "
        f"PostgreSQL {machine['postgresql']}, Python {machine['python']}"
    )
    for run in runs:
        print()
        print(
            f"### {run.workers} worker(s) per system: {args.connections} connections, "
            f"{args.threads} wrk thread(s), {args.rounds} × {args.duration:g} s per system "
            f"after {args.warmup} s warm-up, DATABASE_POOL_SIZE={args.pool_size}"
        )
        print()
        print(figures_table(run.results))
        print()
        print(targets_summary(run.results, run.memory, run.workers))
    if len(runs) > 1:
        print()
        print("### Rates by worker count")
        print()
        print(scaling_table(runs))
    print(f"\nbench: done in {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(to_json(args, machine, runs), indent=2))
    return 0


def _check_alive(servers: list[Server]) -> None:
    for server in servers:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} died during the benchmark:\n{server.log_path}")
        try:
            httpx.get(server.base_url + "/healthz", timeout=5)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"{server.name} stopped answering: {exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
