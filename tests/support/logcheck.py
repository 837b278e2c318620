"""Secrets never reach a log, checked over the whole test session.

Every service process the tests start writes its output to
``service-<port>.log`` under pytest's base temporary directory
(``tests.support.processes``), at ``LOG_LEVEL=debug`` unless a test says
otherwise. When the session ends, each of those files is searched for
anything shaped like a link token, an API key or a webhook secret, and for
the exact secrets the suite registered with ``remember_secrets``.

The one thing allowed to print a secret is ``serve --dev``: its banner shows
the demo client's API key on purpose, to a developer's terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

SHAPES = {
    "API key": re.compile(r"alk_[A-Za-z0-9_-]{30,}"),
    "webhook secret": re.compile(r"whsec_[A-Za-z0-9+/=_-]{20,}"),
    "link token": re.compile(r"[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
    "link path": re.compile(r"/r/[A-Za-z0-9_.-]{20,}"),
}
DEV_BANNER = "Action Links — development mode"
DEV_BANNER_SECRET_LINE = re.compile(r"^\s+(API key:|curl )")

_known: set[str] = set()


def remember_secrets(*values: str) -> None:
    """Secrets whose exact value must never appear in a service log."""
    _known.update(v for v in values if v)


def leaks(text: str, known: Iterable[str] = ()) -> list[str]:
    """What in ``text`` looks like, or is, a secret: one line per finding, secret elided."""
    dev_mode = DEV_BANNER in text
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if dev_mode and DEV_BANNER_SECRET_LINE.match(line):
            continue
        found.extend(
            f"line {number}: {kind}" for kind, shape in SHAPES.items() if shape.search(line)
        )
        found.extend(f"line {number}: a known secret" for value in known if value in line)
    return found


def service_logs(base: Path) -> list[Path]:
    return sorted(base.rglob("service-*.log"))


@pytest.fixture(scope="session", autouse=True)
def service_logs_hold_no_secrets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    findings = [
        f"{path}: {finding}"
        for path in service_logs(tmp_path_factory.getbasetemp())
        for finding in leaks(path.read_text(errors="replace"), _known)
    ]
    if findings:
        pytest.fail("secrets in service logs:\n" + "\n".join(findings[:50]), pytrace=False)
