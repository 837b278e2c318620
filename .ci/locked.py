"""Fails when what the lock installed does not satisfy pyproject.toml: run `bash .ci/lock`.

``pip check`` covers the dependencies of every installed distribution, but not
the extras of our own package (``test`` and any other) nor the extras they
ask of others (``uvicorn[standard]``). This walks every requirement of
pyproject.toml and of the client libraries' (clients/*/pyproject.toml), every
extra included, and checks each against the installed version.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# The service and the client libraries CI installs beside it.
PYPROJECTS = [ROOT / "pyproject.toml", *sorted(ROOT.glob("clients/*/pyproject.toml"))]


def unmet(requirement: Requirement, extra: str, seen: set[str]) -> list[str]:
    """Why ``requirement`` (and the extras it asks for) is not met; empty when it is."""
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
        return []
    key = str(requirement)
    if key in seen:
        return []
    seen.add(key)
    try:
        installed = distribution(requirement.name)
    except PackageNotFoundError:
        return [f"{requirement} is not installed"]
    if not requirement.specifier.contains(installed.version, prereleases=True):
        return [f"{requirement} is not met by the installed {installed.version}"]
    problems: list[str] = []
    for wanted in requirement.extras:
        for line in installed.requires or []:
            problems += unmet(Requirement(line), wanted, seen)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, action="append", help="default: all")
    wanted: list[tuple[str, str]] = []
    for path in parser.parse_args(argv).pyproject or PYPROJECTS:
        project = tomllib.loads(path.read_text())["project"]
        wanted += [("", line) for line in project["dependencies"]]
        for extra, lines in project.get("optional-dependencies", {}).items():
            wanted += [(extra, line) for line in lines]
    seen: set[str] = set()
    problems = [p for extra, line in wanted for p in unmet(Requirement(line), extra, seen)]
    for problem in problems:
        print(f"pyproject.toml: {problem}")
    if problems:
        print("the lock is stale: run `bash .ci/lock` and commit requirements/")
        return 1
    print(f"the lock satisfies pyproject.toml ({len(seen)} requirements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
