"""What a serving process loads: nothing that only another database or command needs.

Each module kept out here is memory every worker would carry (bench/README.md,
"Memory per worker"): the SQLite driver and store in a PostgreSQL process, the
webhook HTTP client (httpx, its TLS context) before a webhook is sent, Babel
(the pages read their catalogs with ``gettext``), the commands' own machinery
(dev mode, the standalone dispatcher), alembic, and uvicorn's file watcher.
Checked in a fresh interpreter, as a process starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, PUBLIC_BASE_URL, SECRET

REPO_ROOT = Path(__file__).resolve().parents[1]

NEVER_WHILE_SERVING = (
    "alembic",
    "babel",
    "service.devmode",
    "service.standalone",
    "service.webhook_http",
    "httpx",
    "watchfiles",
)
ONLY_FOR_SQLITE = ("sqlite3", "aiosqlite", "service.store.sqlite")

# `serve --workers 1` in one process: the command, its preflight, then what uvicorn
# does with the factory (``run`` stands in for uvicorn's, and stops there).
SERVE_ONE_WORKER = """
from service import cli  # first, as in `python -m service`
import json, sys, uvicorn

def run(app, **options):
    import asyncio
    from service.main import app_from_env

    served = app_from_env()
    async def lifespan():
        async with served.router.lifespan_context(served):
            pass
    asyncio.run(lifespan())
    print(json.dumps(sorted(name for name, module in sys.modules.items() if module)))

uvicorn.run = run
cli.main(["serve", "--port", "8000"])  # never listened on: run stops first
"""


def loaded_while_serving(database_url: str) -> set[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": database_url,
        "SECRET_KEYS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "LOG_LEVEL": "warning",
    }
    result = subprocess.run(
        [sys.executable, "-c", SERVE_ONE_WORKER],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return set(modules)


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in modules]


@pytest.mark.slow
@pytest.mark.backends("postgres", "sqlite")
def test_a_serving_process_loads_only_what_its_database_needs(
    backend: str, database_url: str
) -> None:
    modules = loaded_while_serving(database_url)
    assert "service.state" in modules  # it did build and start the app
    assert loaded(modules, NEVER_WHILE_SERVING) == []
    sqlite = loaded(modules, ONLY_FOR_SQLITE)
    if backend == "postgres":
        assert sqlite == []
        assert "service.store.postgres" in modules
    else:
        assert sqlite == list(ONLY_FOR_SQLITE)
        assert "service.store.postgres" not in modules
