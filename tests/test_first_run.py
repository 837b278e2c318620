"""A first run of ``action-links``, as a new user meets it: every mistake is one line.

Each command runs against a PostgreSQL that is not running, a database that
does not exist, and one that was never migrated; then bad settings and flags,
the default ``PUBLIC_BASE_URL``, ``--help`` and ``--version`` (``--dev`` on a
terminal: tests/test_devmode.py). What matters is what a person reads: one line on stderr that
says what to do, never a traceback, and a non-zero exit status.

Of each kind of mistake, one command runs as a real process (``python -m
service``, the entry point of ``action-links``: what it prints up to its exit,
interpreter shutdown included): an unreachable and a missing database, a schema
behind, a SQLite directory that is not there, ``--version``; a refused setting's
is tests/test_cli.py's. The others run the same entry function,
``service.cli.main``, in this process, with the same clean environment and
working directory: the same code without the second of imports each process costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service import __version__
from service.cli import build_parser, main
from service.config import Settings, environment_name
from service.db import migrate
from tests.conftest import ADMIN_TOKEN, SECRET, SHOP_ORIGIN
from tests.support import database
from tests.support.processes import REPO_ROOT, free_port, running_service

pytestmark = pytest.mark.slow

MIGRATE = "action-links: the database has no schema yet: run `action-links migrate`"
# Every command that needs the database (serve gets a port of its own).
DATABASE_COMMANDS = [
    ["migrate"],
    ["serve"],
    ["dispatcher"],
    ["purge"],
    ["client", "list"],
    ["client", "create", "shop", "--allow", f"{SHOP_ORIGIN}/"],
    ["key", "create", "shop"],
    ["action", "show", "shop", "activate"],
]


# Read by the command besides Settings' own variables (serve and --dev).
OTHER_VARIABLES = ("PORT", "WEB_CONCURRENCY", "ACTION_LINKS_DEV", "LOG_FORMAT")


def setting_variables() -> set[str]:
    """Every variable the command reads a setting from (``NAME`` and ``NAME_FILE``)."""
    names = {environment_name(field) for field in Settings.model_fields}
    return names | {f"{name}_FILE" for name in names} | set(OTHER_VARIABLES)


def clean_environment(**settings: str) -> dict[str, str]:
    """This environment without any setting of the service, plus ``settings``."""
    names = setting_variables()
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "SECRET_KEYS": SECRET, **settings}


def action_links(
    *argv: str, cwd: Path, timeout: float = 120, **settings: str
) -> subprocess.CompletedProcess[str]:
    if argv[0] == "serve":
        argv = (*argv, "--port", str(free_port()))
    return subprocess.run(
        [sys.executable, "-m", "service", *argv],
        env=clean_environment(**settings),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``action_links`` without a process: ``service.cli.main`` in ``cwd``, in the clean
    environment (restored after the test), its exit status and output as a process's."""

    def run(*argv: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
        if argv[0] == "serve":
            argv = (*argv, "--port", str(free_port()))
        present = {name for name in os.environ if name.upper() in setting_variables()}
        for name in present | set(setting_variables()):
            monkeypatch.setenv(name, "")  # remembered: the test's end restores it
            monkeypatch.delenv(name)
        for name, value in {"SECRET_KEYS": SECRET, **settings}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse: --help, or a flag it refuses
            status = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(argv), status, out, err)

    return run


def one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The single line a refusal prints; no traceback, the expected exit status."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == status, result.stderr
    assert lines[0].startswith("action-links: ")
    return lines[0]


@pytest.fixture
def unmigrated(postgres_url: str) -> Iterator[str]:
    url = database.create_database(migrated=False)
    yield url
    database.drop_database(url)


@pytest.fixture(scope="module")
def never_migrated(postgres_url: str) -> Iterator[str]:
    """An unmigrated database for the commands that refuse it (none of them migrates)."""
    url = database.create_database(migrated=False)
    yield url
    database.drop_database(url)


def runner(argv: list[str], real: list[str], in_process: Run) -> Run:
    """A real process for the command ``real`` of a kind of mistake, ``main`` for the others."""
    return action_links if argv == real else in_process


@pytest.mark.parametrize("argv", DATABASE_COMMANDS, ids=" ".join)
def test_postgresql_not_running(argv: list[str], tmp_path: Path, in_process: Run) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://postgres@127.0.0.1:{port}/links"
    run = runner(argv, ["migrate"], in_process)
    line = one_line(run(*argv, cwd=tmp_path, DATABASE_URL=url), 1)
    assert line == (
        f"action-links: cannot reach PostgreSQL at 127.0.0.1:{port}: start it, or point "
        "DATABASE_URL at a running server"
    )


@pytest.mark.parametrize("argv", DATABASE_COMMANDS, ids=" ".join)
def test_database_does_not_exist(
    argv: list[str], tmp_path: Path, postgres_url: str, in_process: Run
) -> None:
    name = f"al_missing_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres@127.0.0.1/{name}"
    run = runner(argv, ["migrate"], in_process)
    line = one_line(run(*argv, cwd=tmp_path, DATABASE_URL=url), 1)
    assert f'database "{name}" does not exist' in line
    assert f"`createdb -h 127.0.0.1 -U postgres {name}`" in line


# Every command but `migrate` itself and `serve`, which runs not ready instead (below).
NEEDS_SCHEMA = [argv for argv in DATABASE_COMMANDS if argv[0] not in ("migrate", "serve")]


@pytest.mark.parametrize("argv", NEEDS_SCHEMA, ids=" ".join)
def test_schema_not_migrated(
    argv: list[str], tmp_path: Path, never_migrated: str, in_process: Run
) -> None:
    # In-process: the schema's real process is test_schema_behind's.
    assert one_line(in_process(*argv, cwd=tmp_path, DATABASE_URL=never_migrated), 1) == MIGRATE


def test_serve_on_an_unmigrated_schema_is_not_ready_until_migrated(
    tmp_path: Path, unmigrated: str
) -> None:
    """The contract's /readyz: 503 while the schema is behind, 200 once `migrate` ran;
    the process says once, in its log, what to do."""
    env = clean_environment(DATABASE_URL=unmigrated, LOG_LEVEL="info")
    with running_service(env, tmp_path) as service:
        assert httpx.get(f"{service.base_url}/readyz", timeout=10).status_code == 503
        # What `action-links migrate` runs (its process: test_deployment's compose run).
        migrate(Settings(database_url=unmigrated))
        assert httpx.get(f"{service.base_url}/readyz", timeout=10).status_code == 200
        told = [line for line in service.log().splitlines() if "not ready until migrated" in line]
    assert len(told) == 1, told
    assert "run `action-links migrate`" in told[0]


@pytest.fixture
def migrated(postgres_url: str) -> Iterator[str]:
    url = database.create_database()
    yield url
    database.drop_database(url)


def test_schema_behind(tmp_path: Path, migrated: str) -> None:
    """A migrated database whose recorded revision is older than this version's."""
    asyncio.run(database.fetch(migrated, "UPDATE alembic_version SET version_num = '0000'"))
    line = one_line(action_links("client", "list", cwd=tmp_path, DATABASE_URL=migrated), 1)
    assert line.startswith("action-links: the database schema is at 0000, this version")
    assert "run `action-links migrate`" in line


def test_sqlite_in_a_directory_that_does_not_exist(tmp_path: Path, in_process: Run) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/missing/links.db"
    for argv, run in ((["migrate"], action_links), (["serve", "--dev"], in_process)):
        line = one_line(run(*argv, cwd=tmp_path, DATABASE_URL=url), 1)
        assert line == (
            f"action-links: cannot create the SQLite database {tmp_path}/missing/links.db: "
            f"the directory {tmp_path}/missing does not exist (create it, or change DATABASE_URL)"
        )


@pytest.mark.parametrize(
    ("argv", "settings", "message"),
    [
        (
            ["client", "list"],
            {"LOG_LEVEL": "verbose"},
            "LOG_LEVEL: must be one of 'critical', 'error', 'warning', 'info' or 'debug' "
            "(got 'verbose')",
        ),
        (["serve"], {"WEBHOOK_TIMEOUT": "soon"}, "WEBHOOK_TIMEOUT: must be a number (got 'soon')"),
        (
            ["action", "put", "shop", "x", "--success-url", f"{SHOP_ORIGIN}/", "--ttl", "99999999"],
            {},
            "--ttl: must be at most 31536000 (got 99999999)",
        ),
        (
            ["client", "create", "Shop!", "--allow", "ftp://shop.example/"],
            {},
            "ID: must match ^[a-z0-9][a-z0-9_-]{0,63}$ (got 'Shop!'); --allow #1: not an "
            "acceptable absolute URL: only absolute http and https URLs are allowed "
            "(got 'ftp://shop.example/')",
        ),
        (
            ["serve"],
            {"PUBLIC_BASE_URL": "http://links.example.com"},
            "PUBLIC_BASE_URL: http://links.example.com is plain http on a host that is not this "
            "machine, so every link would cross the network unencrypted: use https://, or set "
            "ALLOW_INSECURE_PUBLIC_BASE_URL=true",
        ),
    ],
)
def test_a_bad_setting_or_flag_is_named(
    argv: list[str], settings: dict[str, str], message: str, tmp_path: Path, in_process: Run
) -> None:
    # In-process: a refused setting's real process is test_cli's serve without keys.
    ran = in_process(*argv, cwd=tmp_path, **settings)
    assert one_line(ran, 2) == f"action-links: {message}"


def test_serve_links_to_the_address_it_listens_on(database_url: str, tmp_path: Path) -> None:
    env = clean_environment(DATABASE_URL=database_url, ADMIN_TOKEN=ADMIN_TOKEN, LOG_LEVEL="info")
    with running_service(env, tmp_path, "--host", "0.0.0.0") as service:
        port = service.base_url.rsplit(":", 1)[1]
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=service.base_url, headers=admin, timeout=30) as http:
            body = {"id": "shop", "name": "Shop", "allowed_redirects": [f"{SHOP_ORIGIN}/"]}
            assert http.post("/v1/admin/clients", json=body).status_code == 201
            action = {"success_url": f"{SHOP_ORIGIN}/welcome"}
            assert http.put("/v1/admin/clients/shop/actions/go", json=action).status_code == 200
            key = http.post("/v1/admin/clients/shop/keys").json()["key"]
            minted = http.post(
                "/v1/links", json={"action": "go"}, headers={"Authorization": f"Bearer {key}"}
            )
        assert minted.status_code == 201, minted.text
        assert minted.json()["url"].startswith(f"http://127.0.0.1:{port}/r/")
        warnings = [line for line in service.log().splitlines() if '"level":"warning"' in line]
    assert len(warnings) == 1, warnings
    assert f"PUBLIC_BASE_URL is http://127.0.0.1:{port}: minted links only work" in warnings[0]


def every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from every_parser(child)


def test_every_command_and_flag_is_described() -> None:
    parsers = list(every_parser(build_parser()))
    assert len(parsers) > 20
    for parser in parsers:
        assert parser.description, parser.prog
        for action in parser._actions:
            assert action.help, (parser.prog, action.dest)
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), parser.prog
    helps = {parser.prog: parser.format_help() for parser in parsers}
    assert "--port PORT" in helps["action-links serve"]
    assert "(default: 8000)" in helps["action-links serve"]
    put = " ".join(helps["action-links action put"].split())
    assert "--ttl SECONDS default link lifetime (default: 86400)" in put
    assert "--max-uses N|unlimited uses per link (default: 1)" in put
    assert "(default: None)" not in "".join(helps.values())


def test_version_and_help(tmp_path: Path, in_process: Run) -> None:
    entry_point = Path(sys.executable).parent / "action-links"
    command = [str(entry_point)] if entry_point.exists() else [sys.executable, "-m", "service"]
    version = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (version.returncode, version.stdout.strip()) == (0, f"action-links {__version__}")
    for argv in (["--help"], ["serve", "--help"], ["action", "put", "--help"]):
        shown = in_process(*argv, cwd=tmp_path)  # argparse's exit, as the process's
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("usage: action-links")
