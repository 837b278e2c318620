"""The client against a real ``action-links serve`` on PostgreSQL.

One process and its database serve every client test (``tests.support.shop_service``):
starting one takes seconds, and no client test needs a server of its own.
Tests share its state, so each works on subjects and links of its own, and
a test that takes the database away gives it back before it ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from action_links_client import Client

from tests.conftest import postgres_url  # noqa: F401
from tests.support.logcheck import service_logs_hold_no_secrets  # noqa: F401
from tests.support.shop_service import Shop, running_shop


@pytest.fixture(scope="session")
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    request.getfixturevalue("postgres_url")  # skips, or fails in CI, without PostgreSQL
    with running_shop(tmp_path_factory.mktemp("client")) as running:
        yield running


@pytest.fixture
def client(shop: Shop) -> Iterator[Client]:
    with shop.client() as links:
        yield links
