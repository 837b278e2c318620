"""What must hold after any fault: nothing lost, nothing extra, nothing half-recorded.

Read straight from PostgreSQL, and compared with what the users were told:

- every claim's ``uses`` (its counter's, plus the audit rows that are a
  single-use link's claim) equals the number of its audit rows, whose use
  numbers never repeat and never exceed what the claim ``issued`` (1…uses
  without a gap while no ``sync`` use was given back); no audit row without
  its claim;
- no claim has more uses than its link allows;
- every redemption of a webhook action has its delivery row;
- every success a user saw has its audit row (its redemption id exists);
- per link: successes seen ≤ uses recorded ≤ max_uses, every recorded use
  that nobody saw as a success is explained by an uncertain answer (a 503
  or a dropped connection whose statement had committed), and ``used`` was
  only ever answered for a link whose uses are all recorded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tests.support.database import fetch
from tests.support.fleet import UNCERTAIN, Fleet, Link, Outcomes, follow

# A link's uses are its counter's plus the audit rows that are a single-use link's claim
# (``claim_expires_at`` set, migration 0006: PostgreSQL writes no counter for those).
LEDGER = """
SELECT coalesce(c.client_id, r.client_id) AS client_id,
       coalesce(c.key, r.claim_key) AS key,
       CASE WHEN c.uses IS NULL AND coalesce(r.carried, 0) = 0 THEN NULL
            ELSE coalesce(c.uses, 0) + coalesce(r.carried, 0) END AS uses,
       greatest(c.issued, r.carried_top) AS issued,
       coalesce(c.max_uses, r.carried_max_uses) AS max_uses,
       coalesce(r.n, 0) AS n, r.distinct_uses, r.min_use, r.max_use
FROM claims c
FULL JOIN (
    SELECT client_id, claim_key, count(*) AS n, count(DISTINCT use) AS distinct_uses,
           min(use) AS min_use, max(use) AS max_use,
           count(*) FILTER (WHERE claim_expires_at IS NOT NULL) AS carried,
           max(use) FILTER (WHERE claim_expires_at IS NOT NULL) AS carried_top,
           max(max_uses) FILTER (WHERE claim_expires_at IS NOT NULL) AS carried_max_uses
    FROM redemptions GROUP BY client_id, claim_key
) r ON r.client_id = c.client_id AND r.claim_key = c.key
"""

MISSING_DELIVERIES = """
SELECT r.id FROM redemptions r
JOIN actions a ON a.client_id = r.client_id AND a.name = r.action
LEFT JOIN deliveries d ON d.redemption_id = r.id
WHERE a.delivery <> 'none' AND d.redemption_id IS NULL
"""

UNEXPECTED_DELIVERIES = """
SELECT d.redemption_id FROM deliveries d
JOIN redemptions r ON r.id = d.redemption_id
JOIN actions a ON a.client_id = r.client_id AND a.name = r.action
WHERE a.delivery = 'none'
"""


async def ledger_problems(database_url: str) -> list[str]:
    """Everything wrong between claims, audit rows and delivery rows (empty when sound)."""
    problems: list[str] = []
    for row in await fetch(database_url, LEDGER):
        key, uses, n = row["key"], row["uses"], row["n"]
        if uses is None:
            problems.append(f"{key}: {n} audit rows without a claim")
            continue
        if uses != n:
            problems.append(f"{key}: the claim counts {uses} uses, the audit log {n}")
        elif n and row["distinct_uses"] != n:
            problems.append(f"{key}: audit use numbers repeat")
        elif n and (row["min_use"] < 1 or row["max_use"] > row["issued"]):
            problems.append(f"{key}: audit use numbers outside 1..{row['issued']} (issued)")
        elif n and row["issued"] == uses and (row["min_use"], row["max_use"]) != (1, n):
            problems.append(f"{key}: audit use numbers are not 1..{n}")
        if row["max_uses"] is not None and uses > row["max_uses"]:
            problems.append(f"{key}: {uses} uses of at most {row['max_uses']}")
    for row in await fetch(database_url, MISSING_DELIVERIES):
        problems.append(f"redemption {row['id']} of a webhook action has no delivery row")
    for row in await fetch(database_url, UNEXPECTED_DELIVERIES):
        problems.append(f"redemption {row['redemption_id']} has a delivery it should not")
    return problems


async def recorded_uses(database_url: str) -> dict[str, int]:
    """Uses per link id, as the database counts them (counters and claim-carrying rows)."""
    rows = await fetch(database_url, f"SELECT key, uses FROM ({LEDGER}) AS l WHERE key LIKE 'l:%'")
    return {row["key"][2:]: row["uses"] for row in rows if row["uses"] is not None}


@dataclass
class Reconciliation:
    """What the users were told, set against what the database recorded."""

    problems: list[str]
    unacknowledged_uses: int  # recorded, but the user got a 503 or a dropped connection


async def reconcile(database_url: str, links: Sequence[Link], outcomes: Outcomes) -> Reconciliation:
    problems = await ledger_problems(database_url)
    uses = await recorded_uses(database_url)
    ids = {row["id"] for row in await fetch(database_url, "SELECT id FROM redemptions")}
    lost = outcomes.redemption_ids - ids
    if lost:
        problems.append(f"{len(lost)} successes seen by users have no audit row")
    unacknowledged = 0
    for link in links:
        answers = outcomes.of(link)
        seen = answers.count("success")
        recorded = uses.get(link.id, 0)
        uncertain = sum(1 for a in answers if a in UNCERTAIN)
        if not seen <= recorded <= link.max_uses:
            problems.append(f"{link.id}: {seen} successes seen, {recorded} recorded")
        if recorded - seen > uncertain:
            problems.append(f"{link.id}: {recorded - seen} uses recorded that nobody was told of")
        if "used" in answers and recorded < link.max_uses:
            problems.append(f"{link.id}: answered 'used' with {link.max_uses - recorded} uses left")
        unacknowledged += recorded - seen
    return Reconciliation(problems, unacknowledged)


async def retry_uncertain(group: Fleet, links: Sequence[Link], outcomes: Outcomes) -> Counter[str]:
    """What a person does after a 503: try again. Each such link must now redeem.

    A retry answers ``used`` only where the uncertain request had in fact
    used the link up (checked by ``reconcile`` afterwards).
    """
    results: Counter[str] = Counter()
    for link in links:
        answers = outcomes.of(link)
        if not any(a in UNCERTAIN for a in answers) or answers.count("success") >= link.max_uses:
            continue
        for attempt in range(10):
            outcome, redemption_id = await follow(group.url(attempt) + link.path())
            if outcome not in UNCERTAIN:
                break
            await asyncio.sleep(0.5)  # the pool notices dead connections one at a time
        outcomes.add(link, outcome, redemption_id, 0.0)
        results[outcome] += 1
    return results
