"""Audits a hashed lock for known vulnerabilities (pip-audit), failing on those with a fix.

    python .ci/audit.py requirements/test.txt [--report build/audit.json]

pip-audit asks PyPI's JSON API (``/pypi/<name>/<version>/json``) for each pinned
version. First that URL is tried for the lock's first package: where it cannot
be reached (a network that only lets package downloads through answers it 404,
which pip-audit would take for "not on PyPI", skip every package and call the
audit clean), the audit is skipped with a message and exit 0: the lock is then
covered by the SBOM and by the next run that can reach the service. When it
can be reached:

- a vulnerability with a fixed version available fails (exit 1): raise the
  pin (``bash .ci/lock --upgrade-package NAME``);
- one without any fix is listed and does not fail (nothing to upgrade to);
- a package that could not be audited fails: the report would be incomplete.

``--from-report FILE`` evaluates a pip-audit JSON report instead of running
pip-audit (the tests use it; so can anyone holding another machine's report).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# The API pip-audit's default service ("pypi") reads, per pinned version. (Some
# networks let /pypi/<name>/json through but not the versioned URL pip-audit asks.)
PYPI_RELEASE_URL = "https://pypi.org/pypi/{name}/{version}/json"
PROBE_TIMEOUT = 10.0
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)", re.MULTILINE)


def probe_url(lock: Path) -> str:
    """The URL pip-audit will ask for the lock's first package (``AUDIT_PROBE_URL`` wins)."""
    if "AUDIT_PROBE_URL" in os.environ:
        return os.environ["AUDIT_PROBE_URL"]
    first = PIN.search(lock.read_text())
    if first is None:
        sys.exit(f"{lock}: no pinned package")
    return PYPI_RELEASE_URL.format(name=first[1], version=first[2])


def service_reachable(url: str) -> str | None:
    """None when the vulnerability service answers like PyPI's JSON API; else why not."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as response:
            document = json.load(response)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        return f"{type(exc).__name__}: {exc}"
    if not isinstance(document, dict) or "info" not in document:
        return "the answer is not PyPI's JSON API"
    return None


def run_pip_audit(lock: Path, report: Path) -> dict[str, Any]:
    report.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--requirement",
        str(lock),
        "--require-hashes",
        "--disable-pip",
        "--progress-spinner",
        "off",
        "--format",
        "json",
        "--output",
        str(report),
    ]
    # Exit 1 means "vulnerabilities found" as well as "failed": the report decides.
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if not report.exists():
        sys.exit(f"pip-audit wrote no report (exit {finished.returncode}):\n{finished.stderr}")
    loaded: dict[str, Any] = json.loads(report.read_text())
    return loaded


def verdict(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(failures, notes) from a pip-audit JSON report."""
    failures: list[str] = []
    notes: list[str] = []
    for dependency in report.get("dependencies", []):
        name = dependency["name"]
        if dependency.get("skip_reason"):
            failures.append(f"{name}: not audited: {dependency['skip_reason']}")
            continue
        for vuln in dependency.get("vulns", []):
            line = f"{name} {dependency['version']}: {vuln['id']}"
            if vuln.get("fix_versions"):
                fixed = ", ".join(vuln["fix_versions"])
                failures.append(f"{line}, fixed in {fixed}")
            else:
                notes.append(f"{line}, no fix released yet")
    return failures, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path, help="a requirements file with hashes")
    parser.add_argument("--report", type=Path, default=Path("build/audit.json"))
    parser.add_argument("--from-report", type=Path, help="evaluate this report instead")
    args = parser.parse_args(argv)
    if args.from_report is not None:
        report = json.loads(args.from_report.read_text())
    else:
        url = probe_url(args.lock)
        unreachable = service_reachable(url)
        if unreachable is not None:
            print(
                f"audit skipped: the vulnerability service ({url}) cannot be reached "
                f"from here ({unreachable}); the SBOM lists what would have been audited"
            )
            return 0
        report = run_pip_audit(args.lock, args.report)
    failures, notes = verdict(report)
    audited = sum(1 for d in report.get("dependencies", []) if not d.get("skip_reason"))
    for note in notes:
        print(f"known vulnerability without a fix: {note}")
    for failure in failures:
        print(f"FAIL {failure}")
    if failures:
        print("raise the pins: bash .ci/lock --upgrade-package NAME")
        return 1
    print(f"audit: {audited} packages, no known vulnerability with a fix available")
    return 0


if __name__ == "__main__":
    sys.exit(main())
