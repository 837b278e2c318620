"""Reading the Dockerfile and docker-compose.yml as Docker would, to run and check them.

There is no Docker engine on the test machines, so the tests take the
container's command (``ENTRYPOINT`` + ``CMD``, or a compose ``command``) and
the environment compose gives a service, and run that as a local process.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import build_parser
from tests.support.processes import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SECRETS_MOUNT = "/run/secrets/"
# Read by ``action-links serve`` itself, not by Settings.
SERVE_VARIABLES = ("PORT", "WEB_CONCURRENCY")

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array form (``CMD ["a", "b"]``); anything else is a test failure."""
        value = json.loads(self.arguments)
        assert isinstance(value, list), self
        assert all(isinstance(v, str) for v in value), self
        return value


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The Dockerfile's build stages, each with its instructions (continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        elif instruction.keyword != "ARG" or stages:
            stages[-1].instructions.append(instruction)
    return stages


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def interpolate(value: str, environ: dict[str, str]) -> str:
    """Compose's ``${NAME}`` and ``${NAME:-default}``."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        found = environ.get(name)
        if found:
            return found
        assert default is not None, f"${{{name}}} has no default and is not set"
        return default

    return _INTERPOLATION.sub(replace, value).replace("$$", "$")


def service_environment(
    service: dict[str, Any], secrets_dir: Path, environ: dict[str, str] | None = None
) -> dict[str, str]:
    """The variables compose sets in the container, with ``/run/secrets/x`` → ``secrets_dir/x``."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env: dict[str, str] = {}
    for name, value in raw.items():
        text = interpolate(str(value), environ or {})
        if text.startswith(SECRETS_MOUNT):
            text = str(secrets_dir / text.removeprefix(SECRETS_MOUNT))
        env[str(name)] = text
    return env


def container_command(service: dict[str, Any], stages: list[Stage]) -> list[str]:
    """What the container runs: the image's ENTRYPOINT plus the compose command or CMD."""
    final = stages[-1]
    entrypoint = final.last("ENTRYPOINT").exec_form()
    command = service.get("command")
    if command is None:
        return entrypoint + final.last("CMD").exec_form()
    assert isinstance(command, list), "compose commands are written in the list form"
    return entrypoint + [str(part) for part in command]


def image_environment(stages: list[Stage]) -> dict[str, str]:
    """The variables the image's ``ENV`` instructions set (``A=1 B=2`` form, no spaces)."""
    env: dict[str, str] = {}
    for instruction in stages[-1].all("ENV"):
        for pair in instruction.arguments.split():
            name, separator, value = pair.partition("=")
            assert separator, f"ENV {instruction.arguments}: use NAME=value"
            env[name] = value
    return env


def container_environment(
    service: dict[str, Any], stages: list[Stage], secrets_dir: Path
) -> dict[str, str]:
    """A container's variables: the image's, overridden by what compose sets."""
    return {**image_environment(stages), **service_environment(service, secrets_dir, {})}


def parse_command(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    """The container command as ``action-links`` parses it in the container's environment
    (``serve`` takes its port and worker count from ``PORT`` and ``WEB_CONCURRENCY``)."""
    assert argv[0] == "action-links", argv
    with pytest.MonkeyPatch.context() as patch:
        for name in SERVE_VARIABLES:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        return build_parser().parse_args(argv[1:])


def local_command(argv: list[str]) -> list[str]:
    """The container command as a local process: ``action-links`` is ``python -m service``
    (this checkout's code), listening on 127.0.0.1 (the port is ``PORT``'s)."""
    assert argv[0] == "action-links", argv
    args = list(argv[1:])
    if "--host" in args:
        args[args.index("--host") + 1] = "127.0.0.1"
    return [sys.executable, "-m", "service", *args]


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} not in {argv}"
    return argv[argv.index(name) + 1]


def image_healthcheck(stages: list[Stage]) -> list[str]:
    """The image's HEALTHCHECK command (exec form)."""
    _, _, command = stages[-1].last("HEALTHCHECK").arguments.partition("CMD ")
    return Instruction("CMD", command).exec_form()


def local_healthcheck(argv: list[str]) -> list[str]:
    """The health check as a local process: this Python (the port is ``PORT``'s)."""
    assert argv[0] == "python", argv
    return [sys.executable, *argv[1:]]
