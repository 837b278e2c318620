"""Schemathesis against the service's own OpenAPI document, over real HTTP.

A real ``action-links serve`` process on the test PostgreSQL, seeded through
its API (``tests.support.fuzz``), fuzzed with positive and negative data and
every default check (no server errors; status codes, content types, headers
and bodies as the document declares them; invalid data refused; auth not
ignored; 405 with ``Allow`` for undeclared methods), three times:

- as a client (its API key, and the ``METRICS_TOKEN``): links, lifecycle,
  audit log, redeliveries, ``/r/{token}`` and the operations endpoints;
- as the operator (``ADMIN_TOKEN``): the admin API;
- with no credentials at all: every operation, expecting 401s, never a 500.

``FUZZ_MAX_EXAMPLES`` sets the examples per operation (10 by default, 500 with
``HEAVY_SCALE=full``); the coverage phase's cases come on top, as the client and
as the operator (the run without credentials has no coverage phase and a quarter
of the examples).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis import BaseSchema, Case

from tests.conftest import ADMIN_TOKEN, PUBLIC_BASE_URL, SECRET
from tests.support.fuzz import Seed, fuzz_config, max_examples, seed
from tests.support.logcheck import remember_secrets
from tests.support.processes import ServiceProcess, running_service

pytestmark = pytest.mark.slow

ADMIN_PATHS = "^/v1/admin/"
Tally = Counter[tuple[str, int]]
METRICS_TOKEN = "fuzz-metrics-token-0123456789abcdef"
remember_secrets(METRICS_TOKEN)


@pytest.fixture(scope="module")
def service(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """One process for the module; each test empties the database and seeds it again.

    ``CACHE_TTL=0``: the process keeps no client, key or action from one test's
    data into the next. The abuse limits are off: the fuzzer sends thousands of
    wrong credentials and tokens from one address, and the 429s after the limit
    (tested in ``test_rate_limits*.py``) would hide the answers under test.
    """
    env = {
        "DATABASE_URL": postgres_url,
        "SECRET_KEYS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "METRICS_TOKEN": METRICS_TOKEN,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "DATABASE_POOL_SIZE": "5",
        "CACHE_TTL": "0",
        "WEBHOOK_TIMEOUT": "1",
        "LOG_LEVEL": "info",
        "RATE_LIMIT_AUTH_FAILURES": "off",
        "RATE_LIMIT_LINK_FAILURES": "off",
    }
    with running_service(env, tmp_path_factory.mktemp("fuzz")) as process:
        yield process


@pytest.fixture
def seeded(service: ServiceProcess, database_url: str) -> Seed:
    return seed(service.base_url, ADMIN_TOKEN)


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's ``from_fixture`` reads ``node._nodeid``, gone in pytest 9.2.

    It only uses it to name each operation's report; the node keeps a
    ``__dict__``, so the attribute is put back for it to read.
    """
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # no proxy lookup in the environment for every request
        yield session


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    """Counts the answers per operation and status, and shows them when the test ends."""
    counts: Tally = Counter()
    yield counts
    lines = [summary(request.node.name, counts)]
    if request.config.get_verbosity() > 0:
        for label in sorted({label for label, _ in counts}):
            statuses = sorted((status, n) for (op, status), n in counts.items() if op == label)
            lines.append(f"  {label}: " + ", ".join(f"{s}×{n}" for s, n in statuses))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            for line in lines:
                reporter.write_line(line)


def summary(name: str, counts: Tally) -> str:
    classes: Counter[str] = Counter()
    for (_, status), n in counts.items():
        classes[f"{status // 100}xx"] += n
    operations = {label for label, _ in counts}
    accepted = {label for label, status in counts if status < 400}
    spread = ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))
    return (
        f"{name}: {len(operations)} operations, {counts.total()} requests ({spread}); "
        f"{len(accepted)} operations answered 2xx or 3xx"
    )


def load(service: ServiceProcess, config: schemathesis.Config) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{service.base_url}/openapi.json", config=config)


@pytest.fixture
def as_client(service: ServiceProcess, seeded: Seed) -> BaseSchema:
    auth = {"ApiKey": seeded.api_key, "MetricsToken": METRICS_TOKEN}
    config = fuzz_config(auth=auth, seeded=seeded)
    return load(service, config)


@pytest.fixture
def as_admin(service: ServiceProcess, seeded: Seed) -> BaseSchema:
    config = fuzz_config(auth={"AdminToken": ADMIN_TOKEN}, seeded=seeded)
    return load(service, config)


@pytest.fixture
def anonymous(service: ServiceProcess, database_url: str) -> BaseSchema:
    """A quarter of the examples (2 per operation in CI) and no coverage phase.

    Without credentials every operation behind one answers 401 whatever the parameters
    and body hold (400 for a request refused at the HTTP level), so the coverage phase's
    boundary cases (about 900 requests, the module's largest share) and more examples
    would prove little that a few cases do not: each operation is still called, with
    valid and invalid data, and no answer may be a 5xx or undocumented.
    """
    config = fuzz_config(auth={}, seeded=None, examples=max_examples() // 4, coverage=False)
    return load(service, config)


def call(case: Case[Any], http: requests.Session, tally: Tally) -> None:
    response = case.call_and_validate(session=http)
    tally[(case.operation.label, response.status_code)] += 1


client_api = schemathesis.pytest.from_fixture("as_client").exclude(path_regex=ADMIN_PATHS)
admin_api = schemathesis.pytest.from_fixture("as_admin").include(path_regex=ADMIN_PATHS)
any_api = schemathesis.pytest.from_fixture("anonymous")


@client_api.parametrize()
def test_client_api(case: Case[Any], http: requests.Session, tally: Tally) -> None:
    call(case, http, tally)


@admin_api.parametrize()
def test_admin_api(case: Case[Any], http: requests.Session, tally: Tally) -> None:
    call(case, http, tally)


@any_api.parametrize()
def test_without_credentials(case: Case[Any], http: requests.Session, tally: Tally) -> None:
    call(case, http, tally)
