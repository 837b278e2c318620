"""The claim: take one use of a link, atomically, and write its audit row (and outbox job).

On PostgreSQL this is one statement in autocommit mode, so one round trip
does all of it: the revocation checks, the counter, the audit row and, for
webhook actions, the delivery job. The counter is bumped with a plain
``UPDATE … WHERE uses < max_uses``, which does not lock a used-up row, and
only a first use inserts (``ON CONFLICT DO NOTHING``), so requests hammering
an exhausted link never queue on a row lock (DESIGN.md, idea 2).

Two first uses racing can make the loser's INSERT conflict with a row its
snapshot does not show; the statement then reports neither a claim nor an
existing row, and is simply run again with a fresh snapshot.

SQLite (the embedded default) has no data-modifying CTEs; there the same
steps run as separate statements in one transaction, write first so the
database lock is taken up front.

``give_back`` is the claim's inverse, for ``sync`` webhooks the receiver did
not accept: it removes the audit row and returns the use to the counter.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BindParameter, TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.models import ALL_ACTIONS, UTCDateTime
from service.pgdriver import Statement, driver_connection
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
    "leased_until": UTCDateTime,
}


def _sql(source: str) -> TextClause:
    """``text(source)`` with the types of the parameters that need one."""
    typed: list[BindParameter[Any]] = [
        bindparam(n, type_=t) for n, t in _PARAM_TYPES.items() if f":{n}" in source
    ]
    return text(source).bindparams(*typed)


POSTGRES_CLAIM = Statement.from_named(
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
    SELECT :client_id, :claim_key, 1, CAST(:max_uses AS integer),
           CAST(:expires_at AS timestamptz), :now, :now
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
    SELECT :redemption_id, :client_id, :link_id, :claim_key, :action, :subject,
           CAST(:data AS json), uses, CAST(:max_uses AS integer), :now
    FROM claimed
    RETURNING id, use
),
job AS (
    INSERT INTO deliveries
        (redemption_id, client_id, status, attempts, next_attempt_at, leased_until, created_at)
    SELECT id, :client_id, 'pending', 0, :now, CAST(:leased_until AS timestamptz), :now
    FROM audit WHERE CAST(:deliver AS boolean)
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
    """A link's counter and revocation as they stand, read without claiming anything.

    ``uses`` is the counter the link draws on (0 before its first use).
    ``recorded_uses`` is what to tell a client: the counter while it exists,
    else (when asked for) the link's audit rows, which outlive a purged counter.
    """

    uses: int
    revoked: bool
    recorded_uses: int


_PEEK = """
SELECT counter.uses AS uses, ({revoked}) AS revoked, {audited} AS audited
FROM (SELECT 1) AS one
LEFT JOIN claims AS counter ON counter.client_id = :client_id AND counter.key = :claim_key
"""
# Counted only for a link without a counter (a subquery in an untaken CASE
# branch is never run), and only when asked: the gate's reads never use it.
_AUDITED = """CASE WHEN counter.uses IS NULL THEN
    (SELECT count(*) FROM redemptions WHERE client_id = :client_id AND link_id = :link_id)
END"""
PEEK = {
    recorded: Statement.from_named(
        _PEEK.format(revoked=_REVOKED, audited=_AUDITED if recorded else "NULL")
    )
    for recorded in (False, True)
}
GENERIC_PEEK = {
    recorded: _sql(_PEEK.format(revoked=_REVOKED, audited=_AUDITED if recorded else "NULL"))
    for recorded in (False, True)
}


async def peek(engine: AsyncEngine, link: LinkClaims, *, recorded: bool = False) -> LinkState:
    """One read-only round trip: how often the link's counter was used, and if it is revoked.

    With ``recorded``, a link without a counter is also looked up in the audit
    log, for ``LinkState.recorded_uses``.
    """
    params = {
        "client_id": link.client_id,
        "link_id": link.link_id,
        "claim_key": link.claim_key,
        "action": link.action,
        "subject": link.subject,
        "issued_at": link.issued_at,
    }
    if engine.dialect.name == "postgresql":
        statement = PEEK[recorded]
        async with driver_connection(engine) as driver:
            row = await driver.fetchrow(statement.sql, *statement.arguments(params))
        assert row is not None
        uses, revoked, audited = row["uses"], row["revoked"], row["audited"]
    else:
        async with engine.connect() as conn:
            found = (await conn.execute(GENERIC_PEEK[recorded], params)).one()
        uses, revoked, audited = found.uses, found.revoked, found.audited
    return LinkState(
        uses=uses or 0,
        revoked=bool(revoked),
        recorded_uses=uses if uses is not None else int(audited or 0),
    )


def _params(
    link: LinkClaims, now: datetime, deliver: bool, lease: datetime | None
) -> dict[str, object]:
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
        "leased_until": lease,
        "redemption_id": secrets.token_urlsafe(12),
    }


async def claim(
    engine: AsyncEngine,
    link: LinkClaims,
    now: datetime,
    deliver: bool,
    lease: datetime | None = None,
) -> ClaimResult:
    """Take one use of ``link``, or say why not (revoked, or no use left).

    With ``deliver``, the delivery job is written too, leased until ``lease``
    when the caller attempts it at once (so no dispatcher races that attempt).
    """
    if engine.dialect.name == "postgresql":
        return await _claim_postgres(engine, link, now, deliver, lease)
    return await _claim_generic(engine, link, now, deliver, lease)


async def _claim_postgres(
    engine: AsyncEngine, link: LinkClaims, now: datetime, deliver: bool, lease: datetime | None
) -> ClaimResult:
    params = _params(link, now, deliver, lease)
    params["data"] = json.dumps(link.data)  # the json codec SQLAlchemy sets up takes text
    arguments = POSTGRES_CLAIM.arguments(params)
    async with driver_connection(engine) as driver:  # no transaction: autocommit
        for _ in range(MAX_RACE_RETRIES):
            row = await driver.fetchrow(POSTGRES_CLAIM.sql, *arguments)
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
INSERT INTO deliveries
    (redemption_id, client_id, status, attempts, next_attempt_at, leased_until, created_at)
VALUES (:redemption_id, :client_id, 'pending', 0, :now, :leased_until, :now)
"""
)


async def _claim_generic(
    engine: AsyncEngine, link: LinkClaims, now: datetime, deliver: bool, lease: datetime | None
) -> ClaimResult:
    params = _params(link, now, deliver, lease)
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


GIVE_BACK_AUDIT = text(
    "DELETE FROM redemptions WHERE id = :redemption_id RETURNING client_id, claim_key"
)

GIVE_BACK_USE = text(
    """
UPDATE claims SET uses = uses - 1
WHERE client_id = :client_id AND key = :claim_key AND uses > 0
"""
)


async def give_back(engine: AsyncEngine, redemption_id: str) -> bool:
    """Undo a claim: the compensating transaction of a ``sync`` webhook that was not accepted.

    Deletes the audit row (its delivery job goes with it, ON DELETE CASCADE)
    and decrements the counter, in one transaction. False when the redemption
    was already gone.
    """
    async with engine.begin() as conn:
        row = (await conn.execute(GIVE_BACK_AUDIT, {"redemption_id": redemption_id})).first()
        if row is None:
            return False
        await conn.execute(GIVE_BACK_USE, {"client_id": row.client_id, "claim_key": row.claim_key})
    return True
