"""Migrations that move existing data, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alembic import command
from service.db import alembic_config
from tests.support import database
from tests.support.database import POSTGRES, SQLITE, fetch

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

NOW = "'2026-11-25 16:00:00+00'"


@pytest.fixture
def blank_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database no migration has run on."""
    if backend == SQLITE:
        yield database.SQLITE_PREFIX + str(tmp_path / "blank.db")
        return
    if not database.postgres_available():
        pytest.skip("PostgreSQL is not reachable")
    url = database.create_database(migrated=False)
    yield url
    database.drop_database(url)


def run(url: str, query: str) -> list[Any]:
    """A statement on the database (alembic runs its own event loop, so tests here are sync)."""
    return asyncio.run(fetch(url, query))


def test_0004_starts_each_counter_above_every_use_number_it_handed_out(blank_url: str) -> None:
    config = alembic_config(blank_url)
    command.upgrade(config, "0003")
    # Before 0004 a given-back use was numbered again: a five-use link with uses 1
    # whose audit row says use 2 (use 1 was refused and given back, then 2 taken).
    run(
        blank_url,
        "INSERT INTO claims (client_id, key, uses, max_uses, expires_at, first_used_at,"
        f" last_used_at) VALUES ('shop', 'l:a', 1, 5, NULL, {NOW}, {NOW}),"
        f" ('shop', 'l:b', 2, 5, NULL, {NOW}, {NOW}), ('shop', 'l:c', 1, 1, NULL, {NOW}, {NOW})",
    )
    run(
        blank_url,
        "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, use, redeemed_at)"
        f" VALUES ('r1', 'shop', 'a', 'l:a', 'x', 2, {NOW}),"
        f" ('r2', 'shop', 'b', 'l:b', 'x', 1, {NOW}), ('r3', 'shop', 'b', 'l:b', 'x', 2, {NOW})",
    )
    command.upgrade(config, "0004")
    rows = run(blank_url, "SELECT key, uses, issued FROM claims ORDER BY key")
    assert [(r["key"], r["uses"], r["issued"]) for r in rows] == [
        ("l:a", 1, 2),  # above its audit row's number
        ("l:b", 2, 2),
        ("l:c", 1, 1),  # its audit rows were purged: its own count
    ]
    command.downgrade(config, "0003")
    command.upgrade(config, "head")


def test_0006_downgrade_gives_audit_rows_that_are_claims_their_counters_back(
    blank_url: str,
) -> None:
    """Before 0006 only counters say a link is used: a downgrade makes one for every audit
    row that is a single-use link's claim, used up, so those links stay used."""
    config = alembic_config(blank_url)
    command.upgrade(config, "0006")
    later = "'2026-11-26 16:00:00+00'"
    run(
        blank_url,
        "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, use, max_uses,"
        " redeemed_at, claim_expires_at) VALUES"
        f" ('r1', 'shop', 'a', 'l:a', 'x', 1, 1, {NOW}, {later}),"
        f" ('r2', 'shop', 'b', 'l:b', 'x', 3, 1, {NOW}, {later}),"
        f" ('r3', 'shop', 'c', 'l:c', 'x', 1, 5, {NOW}, NULL)",
    )
    # b's counter: a sync use given back (0 uses, 2 numbers handed out), then use 3 taken.
    run(
        blank_url,
        "INSERT INTO claims (client_id, key, uses, issued, max_uses, expires_at, first_used_at,"
        f" last_used_at) VALUES ('shop', 'l:b', 0, 2, 1, {later}, {NOW}, {NOW}),"
        f" ('shop', 'l:c', 1, 1, 5, {later}, {NOW}, {NOW})",
    )
    with pytest.raises(Exception, match="(?i)unique"):  # one audit row per single-use link
        run(
            blank_url,
            "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, use, max_uses,"
            f" redeemed_at) VALUES ('r4', 'shop', 'a', 'l:a', 'x', 2, 1, {NOW})",
        )
    command.downgrade(config, "0005")
    rows = run(blank_url, "SELECT key, uses, issued, max_uses FROM claims ORDER BY key")
    assert [(r["key"], r["uses"], r["issued"], r["max_uses"]) for r in rows] == [
        ("l:a", 1, 1, 1),
        ("l:b", 1, 3, 1),
        ("l:c", 1, 1, 5),  # a counter's own link: untouched
    ]
    command.upgrade(config, "head")


def index_definitions(url: str, backend: str) -> dict[str, str]:
    if backend == SQLITE:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        return {r["name"]: r["sql"] for r in run(url, query)}
    query = (
        "SELECT indexname AS name, indexdef AS sql FROM pg_indexes WHERE tablename = 'redemptions'"
    )
    return {r["name"]: r["sql"] for r in run(url, query)}


def test_0007_narrows_two_audit_indexes_and_the_downgrade_widens_them(
    blank_url: str, backend: str
) -> None:
    """The link index leaves out single-use links' rows (found by their claim's index),
    the subject index rows without a subject; a downgrade puts them back."""
    config = alembic_config(blank_url)
    command.upgrade(config, "0006")
    run(
        blank_url,
        "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, subject, use,"
        " max_uses, redeemed_at) VALUES"
        f" ('r1', 'shop', 'a', 'l:a', 'x', 's', 1, 1, {NOW}),"
        f" ('r2', 'shop', 'b', 'l:b', 'x', NULL, 1, NULL, {NOW})",
    )
    command.upgrade(config, "0007")
    narrowed = index_definitions(blank_url, backend)
    assert "once_key IS NOT NULL" in narrowed["ix_redemptions_client_link_seq"]
    assert "subject IS NOT NULL" in narrowed["ix_redemptions_client_subject_seq"]
    command.downgrade(config, "0006")
    widened = index_definitions(blank_url, backend)
    for name in ("ix_redemptions_client_link_seq", "ix_redemptions_client_subject_seq"):
        assert "WHERE" not in widened[name].upper()
    assert len(run(blank_url, "SELECT id FROM redemptions")) == 2
    # A single-use link's row whose claim key were not its link's would be lost to the
    # queries by link id: the upgrade refuses rather than hide it.
    run(
        blank_url,
        "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, use, max_uses,"
        f" redeemed_at) VALUES ('r3', 'shop', 'c', 'l:other', 'x', 1, 1, {NOW})",
    )
    with pytest.raises(RuntimeError, match="claim key"):
        command.upgrade(config, "0007")
    run(blank_url, "DELETE FROM redemptions WHERE id = 'r3'")
    command.upgrade(config, "head")


def test_0008_drops_the_index_of_redemption_times_and_the_downgrade_builds_it_again(
    blank_url: str, backend: str
) -> None:
    """Purge walks ``seq`` instead; no audit query reads the index (bench/README.md)."""
    config = alembic_config(blank_url)
    command.upgrade(config, "0007")
    assert "ix_redemptions_redeemed_at" in index_definitions(blank_url, backend)
    run(
        blank_url,
        "INSERT INTO redemptions (id, client_id, link_id, claim_key, action, use, redeemed_at)"
        f" VALUES ('r1', 'shop', 'a', 'l:a', 'x', 1, {NOW})",
    )
    command.upgrade(config, "0008")
    assert "ix_redemptions_redeemed_at" not in index_definitions(blank_url, backend)
    command.downgrade(config, "0007")
    rebuilt = index_definitions(blank_url, backend)["ix_redemptions_redeemed_at"]
    assert "(redeemed_at)" in rebuilt.replace('"', "")
    assert [r["id"] for r in run(blank_url, "SELECT id FROM redemptions")] == ["r1"]
    command.upgrade(config, "head")


@pytest.mark.backends(SQLITE)
def test_the_schema_head_read_from_the_files_is_alembics() -> None:
    """``schema_head`` reads the migration files itself (no alembic in the workers)."""
    from alembic.script import ScriptDirectory

    from service.db import schema_head

    assert schema_head() == ScriptDirectory.from_config(alembic_config("")).get_current_head()


# What a worker imports: the app, the schema check, and httpx (the webhook client).
WORKER_IMPORTS = (
    "import service.main; from service.db import schema_head; schema_head(); import httpx"
)


@pytest.fixture(scope="module")
def worker_modules() -> set[str]:
    """Every module a fresh interpreter holds after a worker's imports (one process for
    the checks below)."""
    import json
    import subprocess
    import sys

    code = f"import json, sys; {WORKER_IMPORTS}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.backends(SQLITE)
@pytest.mark.parametrize(
    "absent",
    [
        # alembic and mako cost each worker ~11 MB; only migrating needs them.
        ("alembic", "mako"),
        # httpx's CLI (click, rich, pygments) would cost each worker ~5 MB when installed.
        ("rich", "pygments"),
    ],
)
def test_a_worker_does_not_import_what_only_other_commands_need(
    worker_modules: set[str], absent: tuple[str, ...]
) -> None:
    assert {"service.main", "httpx"} <= worker_modules
    assert sorted(m for m in worker_modules if m.split(".")[0] in absent) == []
