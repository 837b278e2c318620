"""Secrets: compared in constant time, stored hashed, never logged, not guessable by brute force.

Every test that starts service processes through ``tests.support.fleet``
also searches their logs for every secret it used (signing key, admin token,
API keys, webhook secrets, minted tokens); this module adds the brute-force
burst and the checks that need no process. Those run on both databases; the
burst starts processes and snapshots tables with PostgreSQL's SQL, and the
parameter check is about PostgreSQL's error messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import string
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.config import Settings
from service.db import open_store
from service.tokens import LinkClaims, TokenCodec
from tests.conftest import ADMIN_TOKEN, Tenant
from tests.support.database import POSTGRES, SQLITE, TABLES, fetch
from tests.support.fleet import (
    Link,
    SecretLedger,
    fleet,
    follow,
    http_client,
    mint_links,
    raw_request,
    report,
    setup_shop,
)
from tests.support.scale import scaled

Headers = dict[str, str]


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_api_keys_are_found_by_hash_and_compared_in_constant_time(
    shop: Tenant,
    http: httpx.AsyncClient,
    database_url: str,
    compare_digest_calls: list[tuple[Any, Any]],
) -> None:
    """The lookup is by SHA-256, so timing can only tell an attacker about a hash of
    their own guess; the hash found is then compared with ``hmac.compare_digest``."""
    digest = hashlib.sha256(shop.key.encode()).hexdigest()
    stored = await fetch(database_url, "SELECT key_hash, prefix FROM api_keys")
    assert [row["key_hash"] for row in stored] == [digest]
    assert shop.key not in str([dict(row) for row in stored])  # only the hash is kept

    minted = await http.post("/v1/links", json={"action": "activate"}, headers=shop.headers)
    assert minted.status_code == 201
    assert (digest, digest) in compare_digest_calls

    compare_digest_calls.clear()
    wrong = shop.key[:-1] + ("A" if shop.key[-1] != "A" else "B")
    refused = await http.post(
        "/v1/links", json={"action": "activate"}, headers={"Authorization": f"Bearer {wrong}"}
    )
    assert refused.status_code == 401
    assert compare_digest_calls == []  # no row has that hash: nothing to compare


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_the_admin_token_is_compared_in_constant_time(
    http: httpx.AsyncClient, compare_digest_calls: list[tuple[Any, Any]]
) -> None:
    """As SHA-256 digests, so that not even its length shows (tests/test_operator_tokens.py)."""
    wrong = "x" * len(ADMIN_TOKEN)
    response = await http.get("/v1/admin/clients", headers={"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 401
    digests = (
        hashlib.sha256(wrong.encode()).digest(),
        hashlib.sha256(ADMIN_TOKEN.encode()).digest(),
    )
    assert digests in compare_digest_calls


async def test_database_errors_never_carry_their_parameters(settings: Settings) -> None:
    """A failing statement's message, which uvicorn logs with a 500, lists no values.

    Here two processes racing to create the same client: the loser's
    IntegrityError would otherwise print the new webhook secret.
    """
    engine = open_store(settings).engine
    secret = "whsec_" + secrets.token_urlsafe(24)
    insert = text(
        "INSERT INTO clients (id, name, webhook_secret, allowed_redirects, created_at,"
        " updated_at) VALUES ('race', 'Race', :secret, '[]', now(), now())"
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(insert, {"secret": secret})
            with pytest.raises(DBAPIError) as failure:
                await conn.execute(insert, {"secret": secret})
    finally:
        await engine.dispose()
    assert "duplicate key" in str(failure.value)
    assert secret not in str(failure.value)


def test_the_log_search_finds_a_leaked_token_or_its_signature(tmp_path: Path) -> None:
    """Guards the search every fleet runs at its end: it must be able to fail."""
    token = TokenCodec([b"k" * 32]).sign_link(LinkClaims("id", "c", "a", None, None, 0, 1, 1))
    signature = token.rpartition(".")[2]
    ledger = SecretLedger()
    ledger.add(token, "alk_secret-api-key-value")
    clean = tmp_path / "clean.log"
    clean.write_text("INFO: started\nWARNING: database unavailable: OSError\n")
    cut = tmp_path / "cut.log"
    cut.write_text(f"GET /r/…{signature} 303\n")  # a log line that kept only the end
    assert ledger.leaks([clean]) == {}
    assert set(ledger.leaks([clean, cut])) == {"cut.log"}


# --- brute force ---------------------------------------------------------------------


async def snapshot(database_url: str) -> dict[str, list[str]]:
    """Every row of every table, as text, in a stable order."""
    tables = {}
    for table in TABLES:
        rows = await fetch(database_url, f"SELECT t::text AS row FROM {table} t")
        tables[table] = sorted(row["row"] for row in rows)
    return tables


def forged_tokens(genuine: list[Link], count: int, rng: random.Random) -> list[str]:
    """Tokens of real links with one character changed, signed with a guessed key, or noise."""
    alphabet = string.ascii_letters + string.digits + "-_"
    guesser = TokenCodec([b"a guessed signing key 0123456789abcdef"])
    forged = []
    for i in range(count):
        token = genuine[i % len(genuine)].token
        kind = i % 3
        if kind == 0:
            at = rng.randrange(len(token))
            swap = rng.choice(alphabet.replace(token[at], ""))
            forged.append(token[:at] + swap + token[at + 1 :])
        elif kind == 1:
            claims = LinkClaims(
                genuine[i % len(genuine)].id, "shop", "once", None, None, 0, 2**40, 1000
            )
            forged.append(guesser.sign_link(claims))
        else:
            forged.append("".join(rng.choices(alphabet, k=rng.randrange(20, 200))))
    return forged


async def burst(requests: list[tuple[str, str, Headers]], at_once: int = 50) -> dict[int, int]:
    """Send every request (method, url, headers), ``at_once`` at a time; count the statuses."""
    statuses: dict[int, int] = {}
    queue = list(reversed(requests))

    async def worker() -> None:
        while queue:
            method, url, headers = queue.pop()
            body = b'{"action": "once"}' if method == "POST" else b""
            status, _ = await raw_request(url, method, headers, body)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker() for _ in range(at_once)))
    return statuses


@pytest.mark.slow
@pytest.mark.heavy
async def test_a_brute_force_burst_changes_nothing(database_url: str, tmp_path: Path) -> None:
    count = scaled(300, 10_000)
    rng = random.Random(8)
    # Debug logging: the most a process ever writes, searched for secrets at the end.
    # The abuse limits are off: this is about what the attempts themselves do (nothing);
    # with limits, they would answer 429 and count (test_rate_limits_processes.py).
    env = {
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "debug",
        "RATE_LIMIT_AUTH_FAILURES": "off",
        "RATE_LIMIT_LINK_FAILURES": "off",
    }
    with fleet(env, tmp_path, 1) as group:
        base = group.url(0)
        async with http_client() as http:
            shop = await setup_shop(http, base, group)
            links = await mint_links(http, base, shop, group, "once", 20)
        for link in links[:10]:
            assert (await follow(base + link.path()))[0] == "success"
        before = await snapshot(database_url)

        wrong_keys = ["alk_" + secrets.token_urlsafe(32) for _ in range(count - count // 10)]
        wrong_keys += [  # near misses of the real key
            shop.key[:-2] + "".join(rng.choices(string.ascii_letters, k=2))
            for _ in range(count // 10)
        ]
        wrong_admin = [secrets.token_urlsafe(24) for _ in range(count)]
        forged = forged_tokens(links, count, rng)
        group.secrets.add(*wrong_keys[:200], *forged[:200])  # attempts must not be logged either

        started = time.perf_counter()
        keys = await burst(
            [
                (
                    "POST",
                    f"{base}/v1/links",
                    {"Authorization": f"Bearer {k}", "Content-Type": "application/json"},
                )
                for k in wrong_keys
            ]
        )
        admin = await burst(
            [
                ("GET", f"{base}/v1/admin/clients", {"Authorization": f"Bearer {t}"})
                for t in wrong_admin
            ]
        )
        tokens = await burst([("GET", f"{base}/r/{t}", {}) for t in forged])
        seconds = time.perf_counter() - started

        assert keys == {401: count}
        assert admin == {401: count}
        assert tokens == {400: count}
        assert await snapshot(database_url) == before
        for link in links[10:]:  # the genuine, unused links still work
            assert (await follow(base + link.path()))[0] == "success"

    report(
        "brute force",
        wrong_api_keys=count,
        wrong_admin_tokens=count,
        forged_tokens=count,
        requests_per_second=round(3 * count / seconds),
        database_changed=False,
        secrets_searched_in_logs=len(group.secrets.values),
    )
