"""A brute force spread over 3 service processes gains nothing (API.md, "Abuse limits").

Three attackers, each from an address of its own on this machine, send wrong
API keys, wrong admin tokens and forged link tokens (GET, HEAD and POST),
round-robin over the processes, all at once; meanwhile a genuine client on
another address mints, reads the admin API and follows fresh links. The
limits are the defaults in a full run (``HEAVY_SCALE=full``) and 20 a
minute in CI. What must hold:

- each attacker gets its normal failure (401, the 400 page) for the limit's
  count, within 10 %, and 429 after that, from every process;
- every 429 carries a ``Retry-After`` of 1 to 60 seconds (the window);
- the genuine client never sees a 429, nor does a valid link followed from
  the link attacker's own address;
- the flood did not write once per request: the counters hold about the
  limit's count, not the number of attempts.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import limits
import pytest

from service.config import Settings
from tests.support.database import fetch
from tests.support.fleet import (
    ADMIN,
    Fleet,
    Shop,
    fleet,
    follow,
    http_client,
    mint_links,
    percentiles,
    raw_request,
    report,
    setup_shop,
)
from tests.support.scale import FULL, scaled

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

PROCESSES = 3
AT_ONCE = 30  # requests in flight per attacker
CI_LIMIT = 20
KEY_ATTACKER, ADMIN_ATTACKER, LINK_ATTACKER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
GENUINE = "127.0.0.1"


def default_limit(name: str) -> int:
    default = Settings.model_fields[name].default
    assert isinstance(default, str)
    return limits.parse(default).amount


AUTH_LIMIT = default_limit("rate_limit_auth_failures") if FULL else CI_LIMIT
LINK_LIMIT = default_limit("rate_limit_link_failures") if FULL else CI_LIMIT
ENV = (
    {}
    if FULL
    else {
        "RATE_LIMIT_AUTH_FAILURES": f"{CI_LIMIT}/minute",
        "RATE_LIMIT_LINK_FAILURES": f"{CI_LIMIT}/minute",
    }
)


@dataclass
class Answers:
    """What one attacker got: statuses, which process answered 429, the Retry-Afters."""

    statuses: Counter[int] = field(default_factory=Counter)
    limited_by: set[int] = field(default_factory=set)
    retry_after: list[int] = field(default_factory=list)


Request = tuple[str, str, dict[str, str], bytes]  # method, path, headers, body


async def attack(
    group: Fleet, source: str, attempts: int, request: Callable[[int], Request]
) -> Answers:
    """``attempts`` requests from ``source``, round-robin over the processes."""
    answers = Answers()
    numbers = iter(range(attempts))

    async def worker() -> None:
        for n in numbers:
            method, path, headers, body = request(n)
            process = n % len(group.processes)
            status, response = await raw_request(
                group.url(process) + path, method, headers, body, source=source
            )
            answers.statuses[status] += 1
            if status == 429:
                answers.limited_by.add(process)
                answers.retry_after.append(int(response["retry-after"]))

    await asyncio.gather(*(worker() for _ in range(AT_ONCE)))
    return answers


def wrong_key(n: int) -> Request:
    headers = {"Authorization": f"Bearer alk_{secrets.token_urlsafe(32)}"}
    return (
        "POST",
        "/v1/links",
        {**headers, "Content-Type": "application/json"},
        b'{"action": "once"}',
    )


def wrong_admin_token(n: int) -> Request:
    return "GET", "/v1/admin/clients", {"Authorization": f"Bearer {secrets.token_hex(16)}"}, b""


def forged_token(n: int) -> Request:
    method = ("GET", "HEAD", "POST")[n % 3]
    return method, f"/r/{secrets.token_urlsafe(60)}.{secrets.token_urlsafe(20)}", {}, b""


@dataclass
class Genuine:
    """A client on another address, working normally while the attacks run."""

    group: Fleet
    shop: Shop
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    async def run(self, links: list[str], stop: asyncio.Event) -> None:
        for n in itertools.count():
            if stop.is_set() or not links:
                return
            base = self.group.url(n)
            started = time.perf_counter()
            minted, _ = await raw_request(
                base + "/v1/links",
                "POST",
                {**self.shop.headers, "Content-Type": "application/json"},
                b'{"action": "once"}',
            )
            admin, _ = await raw_request(base + "/v1/admin/clients", headers=ADMIN)
            followed, _ = await follow(base + links.pop())
            self.latencies.append((time.perf_counter() - started) / 3)
            self.statuses.update([f"mint {minted}", f"admin {admin}", f"link {followed}"])


async def counted(database_url: str, address: str) -> dict[str, int]:
    rows = await fetch(
        database_url,
        "SELECT scope, failures FROM failure_counters WHERE address = $1",
        address,
    )
    return {row["scope"]: row["failures"] for row in rows}


def assert_limited_at(answers: Answers, failure: int, limit: int, attempts: int) -> None:
    assert set(answers.statuses) <= {failure, 429}, answers.statuses
    assert limit <= answers.statuses[failure] <= limit * 1.1, answers.statuses
    assert answers.statuses[429] == attempts - answers.statuses[failure]
    assert answers.limited_by == set(range(PROCESSES))  # every process refused
    assert all(1 <= seconds <= 60 for seconds in answers.retry_after), answers.retry_after


async def test_a_brute_force_spread_over_three_processes_is_limited_at_the_count(
    database_url: str, tmp_path: Path
) -> None:
    attempts = scaled(5 * CI_LIMIT, 3000)
    env = {"DATABASE_URL": database_url, "LOG_LEVEL": "info", **ENV}
    with fleet(env, tmp_path, PROCESSES) as group:
        async with http_client() as http:
            shop = await setup_shop(http, group.url(0), group)
            links = await mint_links(http, group.url(0), shop, group, "once", scaled(200, 2000))
        spare = [link.path() for link in links[:PROCESSES]]
        genuine = Genuine(group, shop)
        stop = asyncio.Event()
        running = asyncio.create_task(
            genuine.run([link.path() for link in links[PROCESSES:]], stop)
        )

        started = time.perf_counter()
        keys, admin, tokens = await asyncio.gather(
            attack(group, KEY_ATTACKER, attempts, wrong_key),
            attack(group, ADMIN_ATTACKER, attempts, wrong_admin_token),
            attack(group, LINK_ATTACKER, attempts, forged_token),
        )
        seconds = time.perf_counter() - started
        stop.set()
        await running

        assert_limited_at(keys, 401, AUTH_LIMIT, attempts)
        assert_limited_at(admin, 401, AUTH_LIMIT, attempts)
        assert_limited_at(tokens, 400, LINK_LIMIT, attempts)
        # Nothing can be guessed through a signature: valid links still work from there.
        for n, path in enumerate(spare):
            status, headers = await raw_request(group.url(n) + path, source=LINK_ATTACKER)
            assert status == 303
            assert "redemption_id=" in headers["location"]
        assert genuine.statuses
        assert set(genuine.statuses) <= {"mint 201", "admin 200", "link success"}, genuine.statuses
        writes = {
            "wrong API keys": (await counted(database_url, KEY_ATTACKER))["auth"],
            "wrong admin tokens": (await counted(database_url, ADMIN_ATTACKER))["auth"],
            "forged tokens": (await counted(database_url, LINK_ATTACKER))["link"],
        }
        assert writes["wrong API keys"] < AUTH_LIMIT + PROCESSES * AT_ONCE
        assert writes["forged tokens"] < LINK_LIMIT + PROCESSES * AT_ONCE

    report(
        "brute force spread over 3 processes",
        processes=PROCESSES,
        attempts_per_attacker=attempts,
        auth_limit=AUTH_LIMIT,
        link_limit=LINK_LIMIT,
        wrong_api_keys=dict(keys.statuses),
        wrong_admin_tokens=dict(admin.statuses),
        forged_tokens=dict(tokens.statuses),
        retry_after_range=[
            min(keys.retry_after + admin.retry_after + tokens.retry_after),
            max(keys.retry_after + admin.retry_after + tokens.retry_after),
        ],
        failures_written=writes,
        attack_requests_per_second=round(3 * attempts / seconds),
        genuine=dict(genuine.statuses),
        genuine_latency=percentiles(genuine.latencies),
    )
