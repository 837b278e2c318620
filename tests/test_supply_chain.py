"""CI's supply-chain checks: the lock must satisfy pyproject.toml, and the audit fails on
a known vulnerability with a fix, notes one without, and never passes an audit it could
not make (an unreachable service is said out loud, a package it could not check fails).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.processes import REPO_ROOT, free_port

CI = REPO_ROOT / ".ci"


def run(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CI / script), *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def audit_report(tmp_path: Path, *dependencies: dict[str, Any]) -> str:
    path = tmp_path / "audit.json"
    path.write_text(json.dumps({"dependencies": list(dependencies), "fixes": []}))
    return str(path)


def test_the_installed_lock_satisfies_pyproject() -> None:
    result = run("locked.py")
    assert result.returncode == 0, result.stdout
    assert "the lock satisfies pyproject.toml" in result.stdout


def test_a_dependency_missing_from_the_lock_fails(tmp_path: Path) -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    unlocked = pyproject.replace(
        '"prometheus-client>=0.20",', '"prometheus-client>=0.20",\n    "left-pad-not-locked>=1",'
    )
    too_new = pyproject.replace('"pytest>=8.2",', '"pytest>=999",')
    assert unlocked != pyproject
    assert too_new != pyproject
    for text, problem in (
        (unlocked, "left-pad-not-locked>=1 is not installed"),
        (too_new, "pytest>=999 is not met by the installed"),
    ):
        (tmp_path / "pyproject.toml").write_text(text)
        result = run("locked.py", "--pyproject", str(tmp_path / "pyproject.toml"))
        assert result.returncode == 1
        assert problem in result.stdout
        assert "run `bash .ci/lock`" in result.stdout


def test_audit_fails_on_a_vulnerability_with_a_fix(tmp_path: Path) -> None:
    report = audit_report(
        tmp_path,
        {"name": "fastapi", "version": "0.165.0", "vulns": []},
        {
            "name": "jinja2",
            "version": "3.1.2",
            "vulns": [{"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"]}],
        },
    )
    result = run("audit.py", "requirements/test.txt", "--from-report", report)
    assert result.returncode == 1
    assert "FAIL jinja2 3.1.2: GHSA-h5c8-rqwp-cp95, fixed in 3.1.3" in result.stdout


def test_audit_notes_but_passes_a_vulnerability_without_a_fix(tmp_path: Path) -> None:
    report = audit_report(
        tmp_path,
        {"name": "fastapi", "version": "0.165.0", "vulns": []},
        {"name": "ecdsa", "version": "0.19.1", "vulns": [{"id": "GHSA-x", "fix_versions": []}]},
    )
    result = run("audit.py", "requirements/test.txt", "--from-report", report)
    assert result.returncode == 0, result.stdout
    assert "known vulnerability without a fix: ecdsa 0.19.1: GHSA-x" in result.stdout
    assert "audit: 2 packages, no known vulnerability with a fix available" in result.stdout


def test_audit_fails_when_a_package_could_not_be_audited(tmp_path: Path) -> None:
    """What pip-audit reports when PyPI's JSON API answers 404: no clean bill of health."""
    report = audit_report(
        tmp_path,
        {"name": "jinja2", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    )
    result = run("audit.py", "requirements/test.txt", "--from-report", report)
    assert result.returncode == 1
    assert "FAIL jinja2: not audited" in result.stdout


def test_audit_is_skipped_out_loud_when_the_service_cannot_be_reached() -> None:
    closed = f"http://127.0.0.1:{free_port()}/pypi/pip/json"
    result = run("audit.py", "requirements/test.txt", env={"AUDIT_PROBE_URL": closed})
    assert result.returncode == 0, result.stdout
    assert f"audit skipped: the vulnerability service ({closed}) cannot be reached" in (
        result.stdout
    )


def load_audit_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_audit", CI / "audit.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_audit_probes_the_url_pip_audit_will_ask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The versioned release URL: some networks serve /pypi/<name>/json but not that one."""
    monkeypatch.delenv("AUDIT_PROBE_URL", raising=False)
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# comment\nada-url==4.0.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via x\n"
    )
    audit = load_audit_script()
    assert audit.probe_url(lock) == "https://pypi.org/pypi/ada-url/4.0.0/json"
