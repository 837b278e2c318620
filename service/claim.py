"""The claim: take one use of a link, atomically, and write its audit row (and outbox job).

On PostgreSQL this is one prepared statement in autocommit mode, run on the
asyncpg connection itself (``service.db.driver_connection``), so one round
trip and little CPU do all of it: the revocation checks, the counter, the
audit row and, for webhook actions, the delivery job. The counter is bumped with a plain
``UPDATE … WHERE uses < max_uses``, which does not lock a used-up row, and
only a first use inserts (``ON CONFLICT DO NOTHING``), so requests hammering
an exhausted link never queue on a row lock (DESIGN.md, idea 2).

Two first uses racing can make the loser's INSERT conflict with a row its
snapshot does not show; the statement then reports neither a claim nor an
existing row, and is simply run again with a fresh snapshot.

SQLite (the embedded default) has no data-modifying CTEs; there the same
steps run as separate statements in one transaction, write first so the
database lock is taken up front.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BindParameter, TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db import driver_connection
from service.models import ALL_ACTIONS, UTCDateTime
from service.tokens import LinkClaims

MAX_RACE_RETRIES = 3


@dataclass(frozen=True, slots=True)
class ClaimResult:
    revoked: bool
    redemption_id: str | None
    use: int | None

    @property
    def claimed(self) -> bool:
        return self.redemption_id is not None


_REVOKED = f"""
    EXISTS (SELECT 1 FROM revocations
            WHERE client_id = :client_id AND link_id = :link_id)
    OR EXISTS (SELECT 1 FROM subject_revocations
               WHERE client_id = :client_id AND subject = :subject
                 AND action IN (:action, '{ALL_ACTIONS}') AND revoked_at > :issued_at)
"""

_PARAM_TYPES = {
    "data": JSON,
    "issued_at": UTCDateTime,
    "expires_at": UTCDateTime,
    "now": UTCDateTime,
}


def _sql(source: str) -> TextClause:
    """``text(source)`` with the types of the parameters that need one."""
    typed: list[BindParameter[Any]] = [
        bindparam(n, type_=t) for n, t in _PARAM_TYPES.items() if f":{n}" in source
    ]
    return text(source).bindparams(*typed)


@dataclass(frozen=True, slots=True)
class Positional:
    """A statement for asyncpg: ``:name`` parameters numbered ``$1…``, and their order."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, source: str) -> Positional:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match[1] not in names:
                names.append(match[1])
            return f"${names.index(match[1]) + 1}"

        return cls(re.sub(r"(?<![:\w]):(\w+)", number, source), tuple(names))

    def args(self, params: Mapping[str, object]) -> list[object]:
        return [params[name] for name in self.names]


POSTGRES_CLAIM = Positional.of(
    f"""
WITH revoked AS (
    SELECT ({_REVOKED}) AS yes
),
existing AS (
    SELECT uses FROM claims WHERE client_id = :client_id AND key = :claim_key
),
bumped AS (
    UPDATE claims SET uses = uses + 1, last_used_at = :now
    WHERE client_id = :client_id AND key = :claim_key
      AND (CAST(:max_uses AS integer) IS NULL OR uses < CAST(:max_uses AS integer))
      AND NOT (SELECT yes FROM revoked)
    RETURNING uses
),
created AS (
    INSERT INTO claims (client_id, key, uses, max_uses, expires_at, first_used_at, last_used_at)
    SELECT :client_id, :claim_key, 1, CAST(:max_uses AS integer), :expires_at, :now, :now
    WHERE NOT EXISTS (SELECT 1 FROM existing) AND NOT (SELECT yes FROM revoked)
    ON CONFLICT DO NOTHING
    RETURNING uses
),
claimed AS (
    SELECT uses FROM bumped UNION ALL SELECT uses FROM created
),
audit AS (
    INSERT INTO redemptions
        (id, client_id, link_id, claim_key, action, subject, data, use, max_uses, redeemed_at)
    SELECT :redemption_id, :client_id, :link_id, :claim_key, :action, :subject, :data,
           uses, CAST(:max_uses AS integer), :now
    FROM claimed
    RETURNING id, use
),
job AS (
    INSERT INTO deliveries
        (redemption_id, client_id, status, attempts, next_attempt_at, created_at)
    SELECT id, :client_id, 'pending', 0, :now, :now FROM audit WHERE :deliver
    RETURNING redemption_id
)
SELECT (SELECT yes FROM revoked) AS revoked,
       EXISTS (SELECT 1 FROM existing) AS existed,
       (SELECT id FROM audit) AS redemption_id,
       (SELECT use FROM audit) AS use,
       (SELECT count(*) FROM job) AS jobs
"""
)


@dataclass(frozen=True, slots=True)
class LinkState:
    """A link's counter and revocation as they stand, read without claiming anything."""

    uses: int
    revoked: bool


_PEEK = f"""
SELECT (SELECT uses FROM claims WHERE client_id = :client_id AND key = :claim_key) AS uses,
       ({_REVOKED}) AS revoked
"""
PEEK = _sql(_PEEK)
POSTGRES_PEEK = Positional.of(_PEEK)


async def peek(engine: AsyncEngine, link: LinkClaims) -> LinkState:
    """One read-only round trip: how often the link's counter was used, and if it is revoked."""
    params = {
        "client_id": link.client_id,
        "link_id": link.link_id,
        "claim_key": link.claim_key,
        "action": link.action,
        "subject": link.subject,
        "issued_at": link.issued_at,
    }
    if engine.dialect.name == "postgresql":
        async with driver_connection(engine) as driver:
            record = await driver.fetchrow(POSTGRES_PEEK.sql, *POSTGRES_PEEK.args(params))
        assert record is not None
        return LinkState(uses=record["uses"] or 0, revoked=bool(record["revoked"]))
    async with engine.connect() as conn:
        row = (await conn.execute(PEEK, params)).one()
    return LinkState(uses=row.uses or 0, revoked=bool(row.revoked))


def _params(link: LinkClaims, now: datetime, deliver: bool) -> dict[str, object]:
    return {
        "client_id": link.client_id,
        "link_id": link.link_id,
        "claim_key": link.claim_key,
        "action": link.action,
        "subject": link.subject,
        "data": link.data,
        "issued_at": link.issued_at,
        "expires_at": None if link.once_key is not None else link.expires_at_datetime,
        "max_uses": link.max_uses,
        "now": now,
        "deliver": deliver,
        "redemption_id": secrets.token_urlsafe(12),
    }


async def claim(engine: AsyncEngine, link: LinkClaims, now: datetime, deliver: bool) -> ClaimResult:
    """Take one use of ``link``, or say why not (revoked, or no use left)."""
    if engine.dialect.name == "postgresql":
        return await _claim_postgres(engine, link, now, deliver)
    return await _claim_generic(engine, link, now, deliver)


async def _claim_postgres(
    engine: AsyncEngine, link: LinkClaims, now: datetime, deliver: bool
) -> ClaimResult:
    params = _params(link, now, deliver)
    if link.data is not None:
        params["data"] = json.dumps(link.data)  # the json column's codec takes text
    args = POSTGRES_CLAIM.args(params)
    async with driver_connection(engine) as driver:
        for _ in range(MAX_RACE_RETRIES):
            row = await driver.fetchrow(POSTGRES_CLAIM.sql, *args)
            assert row is not None
            if row["revoked"] or row["redemption_id"] is not None or row["existed"]:
                break
    return ClaimResult(revoked=row["revoked"], redemption_id=row["redemption_id"], use=row["use"])


GENERIC_BUMP = _sql(
    """
UPDATE claims SET uses = uses + 1, last_used_at = :now
WHERE client_id = :client_id AND key = :claim_key
  AND (:max_uses IS NULL OR uses < :max_uses)
RETURNING uses
"""
)

GENERIC_CREATE = _sql(
    """
INSERT INTO claims (client_id, key, uses, max_uses, expires_at, first_used_at, last_used_at)
VALUES (:client_id, :claim_key, 1, :max_uses, :expires_at, :now, :now)
ON CONFLICT DO NOTHING
RETURNING uses
"""
)

GENERIC_REVOKED = _sql(f"SELECT {_REVOKED} AS yes")

GENERIC_AUDIT = _sql(
    """
INSERT INTO redemptions
    (id, client_id, link_id, claim_key, action, subject, data, use, max_uses, redeemed_at)
VALUES (:redemption_id, :client_id, :link_id, :claim_key, :action, :subject, :data,
        :use, :max_uses, :now)
"""
)

GENERIC_JOB = _sql(
    """
INSERT INTO deliveries (redemption_id, client_id, status, attempts, next_attempt_at, created_at)
VALUES (:redemption_id, :client_id, 'pending', 0, :now, :now)
"""
)


async def _claim_generic(
    engine: AsyncEngine, link: LinkClaims, now: datetime, deliver: bool
) -> ClaimResult:
    params = _params(link, now, deliver)
    async with engine.connect() as conn:
        use = await _bump_or_create(conn, params)
        revoked = bool((await conn.execute(GENERIC_REVOKED, params)).scalar_one())
        if revoked or use is None:
            await conn.rollback()
            return ClaimResult(revoked=revoked, redemption_id=None, use=None)
        params["use"] = use
        await conn.execute(GENERIC_AUDIT, params)
        if deliver:
            await conn.execute(GENERIC_JOB, params)
        await conn.commit()
    return ClaimResult(revoked=False, redemption_id=str(params["redemption_id"]), use=use)


async def _bump_or_create(conn: AsyncConnection, params: dict[str, object]) -> int | None:
    """Write first, so SQLite takes its write lock before anything is read."""
    use = (await conn.execute(GENERIC_BUMP, params)).scalar_one_or_none()
    if use is None:
        use = (await conn.execute(GENERIC_CREATE, params)).scalar_one_or_none()
    return use
