"""PostgreSQL's instructions per claim, counted by callgrind: alone, together, and the baseline's.

``python -m bench.pg_instructions [--statements N] [--sizes 4,16,64]`` runs, as
root (it starts a throwaway PostgreSQL as the ``postgres`` user) and with
valgrind installed:

- a migrated database on the benchmark's server (``bench.database``), whose
  schema is copied into a throwaway cluster in a temporary directory;
- for each arm, ``postgres --single`` on a fresh copy of that cluster under
  ``valgrind --tool=callgrind``, reading a script that prepares the statement
  and executes it N times with fresh links: the store's claim of a single-use
  link (``SINGLE_USE_CLAIM_SQL``), the claims of a batch of each size
  (``BATCH_CLAIM_SQL``, N links in N / size statements) and the baseline's
  ``INSERT … ON CONFLICT DO NOTHING``.

Instructions do not depend on what else the machine is doing, which CPU time
on this shared machine does (bench/README.md), so this is the figure to
compare statements and schemas by. Per claim it reports:

- ``executor``: what the statement itself costs, the inclusive instructions of
  ``GetCachedPlan`` (locks, plan checks), ``ExecutorStart`` (opening and setting
  up every relation and node), ``ExecutorRun``, ``ExecutorEnd`` and
  ``CommitTransactionCommand``;
- ``all``: every instruction of the backend.

Both are the difference between a run of N statements and one of ``WARM``, so
that start-up, shutdown and the plan cache's first runs (planned for their
parameters, before it settles on a plan) cancel out. ``all`` adds what
single-user mode costs and the wire protocol does not: parsing the
``EXECUTE``'s literals (long array literals above all) and printing rows.

One backend, one statement at a time: what it leaves out is contention and the
kernel (the WAL flush, the socket), which ``bench.claim_wal`` and ``bench.run``
measure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from bench import database
from bench.baseline import REDEEM as BASELINE_INSERT
from bench.claim_cpu import new_link
from bench.database import SERVER_URL
from service.store import Via
from service.store.claim_batch import BATCH_CLAIM_SQL, batch_params
from service.store.postgres import SINGLE_USE_CLAIM_SQL, Positional, claim_sql
from service.store.sql import claim_params, new_redemption_id

EXECUTOR = (
    "GetCachedPlan",
    "ExecutorStart",
    "ExecutorRun",
    "ExecutorEnd",
    "CommitTransactionCommand",
)
WARM = 7  # statements past the plan cache's first five runs, each planned for its parameters
SOCKET_PORT = 5999  # names the socket file only: the throwaway server listens on no address
_INCLUSIVE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\S*?:(\w+) \[")

_DIALECT = create_async_engine("postgresql+asyncpg://").dialect  # compiles; never connects
CLAIM = Positional.compile(claim_sql(SINGLE_USE_CLAIM_SQL, deliver=False), _DIALECT)
BATCH = Positional.compile(BATCH_CLAIM_SQL, _DIALECT)


def postgres_bin() -> Path:
    """The newest installed server's binaries (Debian keeps them out of ``PATH``)."""
    installed = Path("/usr/lib/postgresql").glob("*/bin/postgres")
    found = sorted(installed, key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not found:
        raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql")
    return found[-1].parent


def as_postgres(command: list[str]) -> list[str]:
    return command if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *command]


def literal(value: object) -> str:
    """``value`` as SQL text for an ``EXECUTE``: an untyped literal, which takes the type of
    the statement's parameter (a list as an array literal, ``'{"a","b"}'``)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        elements = ("NULL" if v is None else _quoted(_text(v)) for v in value)
        return "'" + ("{" + ",".join(elements) + "}").replace("'", "''") + "'"
    return "'" + _text(value).replace("'", "''") + "'"


def _text(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _quoted(text: str) -> str:
    """An array literal's element, quoted."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def claim_alone(now: datetime) -> list[object]:
    params = claim_params(new_link(now), now, False, None, Via.LINK, False)
    params["data"] = json.dumps(params["data"])
    return CLAIM.arguments(params)


def baseline_insert(now: datetime) -> list[object]:
    return [secrets.token_urlsafe(15), "go", "user-1"]


def claims_together(size: int) -> Callable[[datetime], list[object]]:
    def arguments(now: datetime) -> list[object]:
        claims = [(new_link(now), now, Via.LINK) for _ in range(size)]
        ids = [new_redemption_id() for _ in claims]
        return BATCH.arguments(batch_params(claims, ids))

    return arguments


def script(sql: str, arguments: Callable[[datetime], list[object]], statements: int) -> str:
    now = datetime.now(UTC)
    lines = ["PREPARE arm AS " + " ".join(sql.split()) + ";"]
    for _ in range(statements):
        lines.append("EXECUTE arm(" + ", ".join(literal(a) for a in arguments(now)) + ");")
    return "\n".join(lines) + "\n"


def schema() -> str:
    """The migrated schema and the baseline's table, as ``pg_dump`` writes them."""
    name = database.new_database_name("pginstr")
    database.create_database(SERVER_URL, name)
    try:
        dsn = database.dsn_for(SERVER_URL, name)
        dumped = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", dsn],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        database.drop_database(SERVER_URL, name)
    return dumped.stdout


def quietly(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{done.stderr[-2000:]}")


def make_cluster(bindir: Path, where: Path, schema_sql: str) -> Path:
    """A stopped throwaway cluster holding ``schema_sql``, loaded through a server that
    listens on a socket in ``where`` only."""
    data = where / "pristine"
    quietly(as_postgres([str(bindir / "initdb"), "-D", str(data)]))
    server = [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(where / "log")]
    options = f"-c listen_addresses='' -k {where} -p {SOCKET_PORT}"
    quietly(as_postgres([*server, "-o", options, "start"]))
    try:
        (where / "schema.sql").write_text(schema_sql)
        psql = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(where), "-p", str(SOCKET_PORT)]
        quietly([*psql, "-U", "postgres", "-f", str(where / "schema.sql"), "postgres"])
    finally:
        quietly(as_postgres([*server, "stop"]))
    return data


def count(bindir: Path, where: Path, pristine: Path, text: str, label: str) -> dict[str, int]:
    """Inclusive instructions of the executor's functions, and ``total``, for one script."""
    run = where / label
    subprocess.run(as_postgres(["cp", "-a", str(pristine), str(run)]), check=True)
    out = where / f"{label}.callgrind"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        str(bindir / "postgres"),
        "--single",
        "-D",
        str(run),
        "postgres",
    ]
    done = subprocess.run(as_postgres(command), input=text, capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if " ERROR: " in line]
    if errors:
        raise SystemExit(f"{label}: {errors[0]}")
    subprocess.run(as_postgres(["rm", "-rf", str(run)]), check=True)
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found: dict[str, int] = {}
    for line in annotated.splitlines():
        if "PROGRAM TOTALS" in line:
            found["total"] = int(line.split()[0].replace(",", ""))
        match = _INCLUSIVE.match(line)
        if match and match[2] in EXECUTOR and match[2] not in found:
            found[match[2]] = int(match[1].replace(",", ""))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--statements", type=int, default=1200, help="claims per arm")
    parser.add_argument("--sizes", default="4,16,64", help="batch sizes of the arms together")
    args = parser.parse_args()
    bindir = postgres_bin()
    where = Path(tempfile.mkdtemp(prefix="pg_instructions_"))
    where.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(where, "postgres")
    try:
        pristine = make_cluster(bindir, where, schema())
        arms: list[tuple[str, str, Callable[[datetime], list[object]], int]] = [
            ("claim alone", CLAIM.sql, claim_alone, 1),
            ("baseline insert", BASELINE_INSERT, baseline_insert, 1),
        ]
        for size in (int(s) for s in args.sizes.split(",") if s):
            arms.append((f"claims together, {size}", BATCH.sql, claims_together(size), size))
        print(f"{'arm':<24} {'all':>9} {'executor':>9}   " + "  ".join(EXECUTOR))
        for label, sql, arguments, size in arms:
            # The plan cache plans a statement's first five runs for their parameters, then
            # settles: the smaller run is past that too, so that the difference is not.
            many = max(WARM + 6, args.statements // size)
            few = WARM
            slug = re.sub(r"\W+", "_", label)
            small = count(bindir, where, pristine, script(sql, arguments, few), f"{slug}_few")
            large = count(bindir, where, pristine, script(sql, arguments, many), f"{slug}_many")
            claims = (many - few) * size
            per_claim = {k: (large.get(k, 0) - small.get(k, 0)) / claims for k in EXECUTOR}
            every = (large["total"] - small["total"]) / claims
            parts = "  ".join(f"{per_claim[k]:,.0f}" for k in EXECUTOR)
            executor = sum(per_claim.values())
            print(f"{label:<24} {every:>9,.0f} {executor:>9,.0f}   {parts}", flush=True)
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
