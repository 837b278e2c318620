"""The ``action-links`` command: the admin operations work on the database directly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import main
from tests.conftest import SHOP_ORIGIN
from tests.support.database import fetch
from tests.support.processes import REPO_ROOT


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_admin_operations(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    created = run(
        capsys, "client", "create", "shop", "--name", "Shop", "--allow", f"{SHOP_ORIGIN}/"
    )
    assert isinstance(created, dict)
    assert created["webhook_secret"].startswith("whsec_")
    key = run(capsys, "key", "create", "shop")
    assert isinstance(key, dict)
    assert key["key"].startswith("alk_")
    action = run(
        capsys,
        "action",
        "put",
        "shop",
        "activate",
        "--success-url",
        f"{SHOP_ORIGIN}/ok",
        "--max-uses",
        "unlimited",
        "--confirm",
        "page",
        "--one-click",
    )
    assert isinstance(action, dict)
    assert (action["max_uses"], action["confirm"], action["one_click"]) == (None, "page", True)
    actions = run(capsys, "action", "list", "shop")
    assert isinstance(actions, list)
    assert [a["name"] for a in actions] == ["activate"]
    keys = run(capsys, "key", "list", "shop")
    assert isinstance(keys, list)
    assert "key" not in keys[0]
    updated = run(capsys, "client", "update", "shop", "--disable")
    assert isinstance(updated, dict)
    assert updated["enabled"] is False
    run(capsys, "key", "delete", "shop", keys[0]["id"])
    run(capsys, "action", "delete", "shop", "activate")
    rotated = run(capsys, "client", "rotate-secret", "shop")
    assert isinstance(rotated, dict)
    assert rotated["webhook_secret"] != created["webhook_secret"]
    run(capsys, "client", "delete", "shop")
    assert asyncio.run(fetch(cli_env, "SELECT * FROM clients")) == []


def test_errors_are_one_line_and_nonzero(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client", "show", "missing"]) == 1
    assert "not_found" in capsys.readouterr().err
    run(capsys, "client", "create", "shop", "--allow", f"{SHOP_ORIGIN}/")
    assert main(["client", "create", "shop"]) == 1
    assert "conflict" in capsys.readouterr().err
    code = main(["action", "put", "shop", "x", "--success-url", "https://evil.example/"])
    assert code == 1
    assert "redirect_not_allowed" in capsys.readouterr().err


def test_keygen_prints_a_strong_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    key = capsys.readouterr().out.strip()
    assert len(key) >= 48
    assert main(["keygen"]) == 0
    assert capsys.readouterr().out.strip() != key


def refused_serve(**env: str) -> list[str]:
    """What ``serve`` says when it refuses to start (exit 2): its stderr lines."""
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    return result.stderr.strip().splitlines()


def test_serve_refuses_to_start_without_keys() -> None:
    lines = refused_serve()
    assert len(lines) == 1
    assert "SECRET_KEYS" in lines[0]


def test_serve_refuses_a_pages_dir_that_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same refusal as above, of another setting: ``main`` in this process, in an
    environment with only the two settings (restored after the test)."""
    missing = tmp_path / "no-such-dir"
    monkeypatch.setenv("PUBLIC_BASE_URL", "")  # serve sets it: remembered, then restored
    for name in list(os.environ):
        if name not in ("PATH", "PYTHONPATH"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SECRET_KEYS", "k" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz")
    monkeypatch.setenv("PAGES_DIR", str(missing))
    assert main(["serve", "--port", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"action-links: PAGES_DIR={missing} is not a directory"]
