"""Claims and purges through a connection pooler (PgBouncer): what works and what fails.

Runs ``--claims`` redemption claims, 20 at a time, and three purges against
``--database-url`` with the service's own store (its pool, its asyncpg
statements), and prints one JSON object: the claims that succeeded, the
failures by exception class, and each purge's outcome. Point it once at
PostgreSQL directly and once at PgBouncer in front of the same migrated
database to see what the pooler changes (README, "Scaling").

    python -m bench.through_pooler --database-url postgresql://postgres@127.0.0.1:6432/links
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from service.config import Settings
from service.db import open_store
from service.purge import purge
from service.store import Store
from service.tokens import LinkClaims

CLIENT = "bench-pooler"
CONCURRENCY = 20


def fresh_link() -> LinkClaims:
    now = time.time()
    return LinkClaims(
        link_id=secrets.token_urlsafe(12),
        client_id=CLIENT,
        action="bench",
        subject="s",
        data={},
        issued_at_us=int(now * 1_000_000),
        expires_at=int(now) + 3600,
        max_uses=1,
    )


def failure(exc: BaseException) -> str:
    """The driver's error class where the store wrapped it."""
    return type(exc.__cause__ or exc).__name__


async def claims(store: Store, count: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()

    async def one() -> None:
        try:
            result = await store.claim(fresh_link(), datetime.now(UTC), deliver=False, lease=None)
        except Exception as exc:  # every failure is counted, by class
            outcomes[failure(exc)] += 1
        else:
            outcomes["claimed" if result.redemption else "refused"] += 1

    for start in range(0, count, CONCURRENCY):
        await asyncio.gather(*(one() for _ in range(min(CONCURRENCY, count - start))))
    return outcomes


async def purges(store: Store, runs: int) -> list[str]:
    outcomes = []
    for _ in range(runs):
        try:
            report = await purge(store, datetime.now(UTC), timedelta(days=90))
        except Exception as exc:  # every failure is counted, by class
            outcomes.append(failure(exc))
        else:
            outcomes.append("skipped" if report.skipped else "ran")
    return outcomes


async def main(args: argparse.Namespace) -> dict[str, object]:
    store = open_store(Settings(database_url=args.database_url, database_pool_size=4))
    try:
        claimed = await claims(store, args.claims)
        purged = await purges(store, 3)
    finally:
        await store.close()
    return {"claims": args.claims, "outcomes": dict(claimed.most_common()), "purges": purged}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a migrated database, or a pooler")
    parser.add_argument("--claims", type=int, default=1000)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
