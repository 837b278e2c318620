"""The SQLite store: the embedded default of ``serve --dev`` and small deployments.

SQLite has no data-modifying CTEs, so the claim runs as separate statements in
one transaction, the write first, so the database's write lock is taken
before anything is read: bump the counter (or create it), then check the
revocations, then write the audit row and the job, or roll back. One writer
at a time makes this exactly as exclusive as PostgreSQL's one statement.

Purge needs no lock (there is one writer anyway) and addresses rows by ``rowid``
(the audit log's by ranges of ``seq``, its rowid: ``purge_batches``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BindParameter, TextClause, bindparam, event, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.config import Settings
from service.json_depth import load_stored
from service.models import UTCDateTime
from service.store import ClaimResult, LinkState, PurgeTarget, Via
from service.store.sql import (
    REVOKED,
    GuardedPool,
    SqlStore,
    claim_params,
    claimed,
    link_state,
    peek_params,
    peek_sql,
)
from service.tokens import LinkClaims

_PARAM_TYPES = {
    "data": JSON,
    "issued_at": UTCDateTime,
    "expires_at": UTCDateTime,
    "now": UTCDateTime,
    "leased_until": UTCDateTime,
    "cutoff": UTCDateTime,
}


def _sql(source: str) -> TextClause:
    """``text(source)`` with the types of the parameters that need one."""
    typed: list[BindParameter[Any]] = [
        bindparam(n, type_=t) for n, t in _PARAM_TYPES.items() if f":{n}" in source
    ]
    return text(source).bindparams(*typed)


PEEK = {recorded: _sql(peek_sql(recorded)) for recorded in (False, True)}

BUMP = _sql(
    """
UPDATE claims SET uses = uses + 1, issued = issued + 1, last_used_at = :now
WHERE client_id = :client_id AND key = :claim_key
  AND (:max_uses IS NULL OR uses < :max_uses)
  AND (claims.max_uses IS NULL OR uses < claims.max_uses)
RETURNING issued
"""
)

CREATE = _sql(
    """
INSERT INTO claims
    (client_id, key, uses, issued, max_uses, expires_at, first_used_at, last_used_at)
VALUES (:client_id, :claim_key, 1, 1, :max_uses, :expires_at, :now, :now)
ON CONFLICT DO NOTHING
RETURNING issued
"""
)

IS_REVOKED = _sql(f"SELECT {REVOKED} AS yes")

AUDIT = _sql(
    """
INSERT INTO redemptions
    (id, client_id, link_id, claim_key, action, subject, data, use, max_uses, redeemed_at,
     once_key, via)
VALUES (:redemption_id, :client_id, :link_id, :claim_key, :action, :subject, :data,
        :use, :max_uses, :now, :once_key, :via)
"""
)

JOB = _sql(
    """
INSERT INTO deliveries
    (redemption_id, client_id, status, attempts, next_attempt_at, leased_until, created_at)
VALUES (:redemption_id, :client_id, :job_status, 0, :now, :leased_until, :now)
"""
)


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    options: dict[str, Any] = {
        "poolclass": GuardedPool,
        "hide_parameters": True,  # as on PostgreSQL: no secret in a logged error
        "json_deserializer": load_stored,  # as on PostgreSQL: old rows may nest too deep
        "connect_args": {"timeout": 30},
    }
    options.update(overrides)
    engine = create_async_engine(settings.database_url, **options)
    event.listen(engine.sync_engine, "connect", _pragmas)
    return engine


class SqliteStore(SqlStore):
    insert = staticmethod(sqlite.insert)

    def watch(self, on_change: Callable[[str | None], None]) -> None:
        """Nobody to listen to: the registry's cache lifetime bounds a change's delay."""

    async def claim(
        self,
        link: LinkClaims,
        now: datetime,
        *,
        deliver: bool,
        lease: datetime | None,
        via: Via = Via.LINK,
        sync: bool = False,
    ) -> ClaimResult:
        params = claim_params(link, now, deliver, lease, via, sync)
        async with self._engine.connect() as conn:
            use = await self._bump_or_create(conn, params)
            revoked = bool((await conn.execute(IS_REVOKED, params)).scalar_one())
            if revoked or use is None:
                await conn.rollback()
                return ClaimResult(revoked=revoked, redemption=None)
            params["use"] = use
            await conn.execute(AUDIT, params)
            if deliver:
                await conn.execute(JOB, params)
            await conn.commit()
        redemption_id = str(params["redemption_id"])
        return ClaimResult(revoked=False, redemption=claimed(link, redemption_id, now, use, via))

    @staticmethod
    async def _bump_or_create(conn: AsyncConnection, params: dict[str, object]) -> int | None:
        """Write first, so SQLite takes its write lock before anything is read."""
        use: int | None = (await conn.execute(BUMP, params)).scalar_one_or_none()
        if use is None:
            use = (await conn.execute(CREATE, params)).scalar_one_or_none()
        return use

    async def peek(self, link: LinkClaims, *, recorded: bool = False) -> LinkState:
        async with self._engine.connect() as conn:
            found = (await conn.execute(PEEK[recorded], peek_params(link))).one()
        return link_state(found._mapping)

    async def _limit_statement_time(self, conn: AsyncConnection, seconds: float) -> None:
        """Nothing to set: a SQLite read is local, and the caller's timeout bounds it."""

    async def _try_lock(self, conn: AsyncConnection) -> bool:
        return True  # one writer at a time anyway

    async def _unlock(self, conn: AsyncConnection) -> None:
        """No lock was taken."""

    def _batch_statement(self, target: PurgeTarget) -> TextClause:
        """Rows are addressed by ``rowid``; the outer condition is checked again, so a
        row changed since the inner select is left alone."""
        where = target.condition
        return _sql(
            f"DELETE FROM {target.table} WHERE rowid IN ("
            f"SELECT rowid FROM {target.table} WHERE {where} LIMIT :n) AND {where}"
        )
