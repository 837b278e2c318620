"""Exactly-once under concurrency: 3 processes on one database, 20 requests per link at once.

Full run (README, "Reliability"): 1,000 single-use links and 100 five-use
links; CI runs 40 and 10 (each still raced by 20 requests at once).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.fleet import (
    Outcomes,
    fleet,
    hammer,
    http_client,
    mint_links,
    percentiles,
    report,
    setup_shop,
)
from tests.support.invariants import reconcile
from tests.support.scale import scaled

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

PROCESSES = 3
REQUESTS_PER_LINK = 20
LINKS_AT_ONCE = 10  # 200 requests in flight


async def test_exactly_once_with_three_processes(database_url: str, tmp_path: Path) -> None:
    single, five = scaled(40, 1000), scaled(10, 100)
    with fleet({"DATABASE_URL": database_url}, tmp_path, PROCESSES) as group:
        async with http_client() as http:
            shop = await setup_shop(http, group.url(0), group)
            once = await mint_links(http, group.url(0), shop, group, "once", single)
            fives = await mint_links(http, group.url(1), shop, group, "five", five)

            outcomes = Outcomes()
            started = time.perf_counter()
            await hammer(group, once, REQUESTS_PER_LINK, LINKS_AT_ONCE, outcomes)
            single_seconds = time.perf_counter() - started
            assert outcomes.totals() == Counter(
                {"success": single, "used": single * (REQUESTS_PER_LINK - 1)}
            )
            assert all(outcomes.of(link).count("success") == 1 for link in once)

            five_outcomes = Outcomes()
            await hammer(group, fives, REQUESTS_PER_LINK, LINKS_AT_ONCE, five_outcomes)
            assert five_outcomes.totals() == Counter(
                {"success": 5 * five, "used": five * (REQUESTS_PER_LINK - 5)}
            )
            assert all(five_outcomes.of(link).count("success") == 5 for link in fives)

    for links, seen in ((once, outcomes), (fives, five_outcomes)):
        result = await reconcile(database_url, links, seen)
        assert result.problems == []
        assert result.unacknowledged_uses == 0

    requests = (single + five) * REQUESTS_PER_LINK
    report(
        "concurrency",
        processes=PROCESSES,
        single_use_links=single,
        five_use_links=five,
        requests=requests,
        successes=single + 5 * five,
        single_use_requests_per_second=round(single * REQUESTS_PER_LINK / single_seconds),
        latency=percentiles(outcomes.latencies + five_outcomes.latencies),
    )
