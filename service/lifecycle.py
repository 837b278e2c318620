"""Taking links back and looking at them: revocation, status, inspection.

Links are not stored when minted, so everything here works from what the
database learned later (use counters, audit rows, revocations) plus, for
inspection, the token itself. A client only ever reaches its own links: link
ids carry a tag binding them to their client (``TokenCodec.owns_link_id``),
so an unknown id and another client's id both answer 404, while a client's
own never-redeemed link answers ``uses: 0``.

Revocations are checked by the claim statement itself (``service.claim``), in
the redemption's one round trip; this module only writes them. A revocation
row lives as long as a link it could refuse might: ``revoked_at`` plus the
longest lifetime any link can have (``MAX_TTL_CAP``), after which
``service.purge`` deletes it.

Functions work in the caller's session and only flush; the caller commits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.claim import peek
from service.errors import NotFound, UnknownAction
from service.models import ALL_ACTIONS, Claim, Redemption, Revocation, SubjectRevocation
from service.redeem import Outcome, Redeemer, judged, utcnow
from service.registry import ClientConfig
from service.schemas import (
    MAX_TTL_CAP,
    InspectedLink,
    InspectReason,
    InspectResponse,
    LinkStatus,
    SubjectRevocationOut,
    SubjectRevocationRequest,
)
from service.tokens import BadData, TokenCodec, link_claim_key

LONGEST_LINK_LIFETIME = timedelta(seconds=MAX_TTL_CAP)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_REASONS: dict[Outcome, InspectReason] = {
    Outcome.INVALID: "invalid",
    Outcome.EXPIRED: "expired",
    Outcome.USED: "used",
    Outcome.REVOKED: "revoked",
    Outcome.DISABLED: "disabled",
}


def exact_now() -> datetime:
    """Now, to the microsecond, from the clock minting stamps ``issued_at_us`` with.

    Built from integer microseconds (no float rounding), so a revocation and
    a mint in the same second still compare the right way round.
    """
    return EPOCH + timedelta(microseconds=time.time_ns() // 1000)


def revocation_expiry(revoked_at: datetime) -> datetime:
    """When no link a revocation at ``revoked_at`` could refuse is still valid.

    Such a link was minted before ``revoked_at`` and lives at most
    ``MAX_TTL_CAP`` (every action's ``max_ttl`` is capped by it).
    """
    return revoked_at + LONGEST_LINK_LIFETIME


def _insert(session: AsyncSession) -> Any:
    """The dialect's INSERT, which knows ``ON CONFLICT`` (PostgreSQL and SQLite alike)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _require_own_link(codec: TokenCodec, client_id: str, link_id: str) -> None:
    if not codec.owns_link_id(client_id, link_id):
        raise NotFound(f"client '{client_id}' has no link '{link_id[:64]}'")


async def revoke_link(
    session: AsyncSession, codec: TokenCodec, client_id: str, link_id: str
) -> None:
    """Revoke one link; revoking it again changes nothing (the first revocation stands)."""
    _require_own_link(codec, client_id, link_id)
    revoked_at = exact_now()
    statement = (
        _insert(session)(Revocation)
        .values(
            client_id=client_id,
            link_id=link_id,
            revoked_at=revoked_at,
            expires_at=revocation_expiry(revoked_at),
        )
        .on_conflict_do_nothing(index_elements=["client_id", "link_id"])
    )
    await session.execute(statement)


async def revoke_subject(
    session: AsyncSession, client: ClientConfig, request: SubjectRevocationRequest
) -> SubjectRevocationOut:
    """Kill every link of ``subject`` (and ``action``, if given) minted before now.

    Revoking the same subject and action again moves ``revoked_at`` forward
    (never back), so the newest revocation is the one that counts.
    """
    if request.action is not None and client.action(request.action) is None:
        # A typo must not look like a successful revocation.
        raise UnknownAction(f"client '{client.id}' has no action '{request.action}'")
    revoked_at = exact_now()
    table = SubjectRevocation.__table__
    insert = _insert(session)(SubjectRevocation).values(
        client_id=client.id,
        subject=request.subject,
        action=request.action if request.action is not None else ALL_ACTIONS,
        revoked_at=revoked_at,
        expires_at=revocation_expiry(revoked_at),
    )
    newer = insert.excluded.revoked_at > table.c.revoked_at
    statement = insert.on_conflict_do_update(
        index_elements=["client_id", "subject", "action"],
        set_={
            "revoked_at": case((newer, insert.excluded.revoked_at), else_=table.c.revoked_at),
            "expires_at": case((newer, insert.excluded.expires_at), else_=table.c.expires_at),
        },
    ).returning(table.c.revoked_at)
    stored: datetime = (await session.execute(statement)).scalar_one()
    return SubjectRevocationOut(subject=request.subject, action=request.action, revoked_at=stored)


@dataclass(frozen=True, slots=True)
class Usage:
    """What the database knows about one link's uses."""

    uses: int
    first_at: datetime | None
    last_at: datetime | None
    revoked: bool


async def usage(session: AsyncSession, client_id: str, link_id: str, claim_key: str) -> Usage:
    """One read: the use counter ``claim_key`` if it exists, else the link's audit rows.

    The counter is the authority while it lives (it outlasts the audit
    retention window for long-lived links); once purged, or for a link that
    draws on a once-key budget, the audit rows of the link id tell its uses.
    """
    audit = (
        select(
            func.count().label("n"),
            func.min(Redemption.redeemed_at).label("first_at"),
            func.max(Redemption.redeemed_at).label("last_at"),
        )
        .where(Redemption.client_id == client_id, Redemption.link_id == link_id)
        .subquery()
    )
    revoked = exists().where(Revocation.client_id == client_id, Revocation.link_id == link_id)
    statement = select(
        audit.c.n,
        audit.c.first_at,
        audit.c.last_at,
        Claim.uses,
        Claim.first_used_at,
        Claim.last_used_at,
        revoked.label("revoked"),
    ).select_from(
        audit.outerjoin(Claim, and_(Claim.client_id == client_id, Claim.key == claim_key))
    )
    row = (await session.execute(statement)).one()
    if row.uses is not None:
        return Usage(row.uses, row.first_used_at, row.last_used_at, bool(row.revoked))
    return Usage(int(row.n), row.first_at, row.last_at, bool(row.revoked))


async def link_status(
    session: AsyncSession, codec: TokenCodec, client_id: str, link_id: str
) -> LinkStatus:
    """Uses and revocation of one of the client's links; never redeemed is ``uses: 0``.

    ``uses`` counts this link's redemptions, also for a link that shares a
    once-key budget. ``revoked`` says whether this link was revoked by id:
    a subject revocation depends on the link's issue time, which only its
    token knows (``inspect`` answers that).
    """
    _require_own_link(codec, client_id, link_id)
    found = await usage(session, client_id, link_id, link_claim_key(link_id))
    return LinkStatus(
        id=link_id,
        uses=found.uses,
        revoked=found.revoked,
        first_redeemed_at=found.first_at,
        last_redeemed_at=found.last_at,
    )


INVALID = InspectResponse(valid=False, reason="invalid", link=None)


async def inspect(redeemer: Redeemer, client_id: str, token: str) -> InspectResponse:
    """What redeeming ``token`` would answer now, without redeeming or recording anything.

    Another client's token is ``invalid`` and reveals nothing, exactly like a
    forged one. ``link.uses`` is the count of the counter the link draws on
    (its own, or its once key's budget), so ``uses`` against ``max_uses``
    explains a ``used`` answer. One read, whatever the answer.
    """
    try:
        link = redeemer.codec.verify_link(token)
    except BadData:
        return INVALID
    if link.client_id != client_id:
        return INVALID  # before any lookup: another client's link costs nothing
    checked = await redeemer.resolve_link(link, utcnow())
    state = await peek(redeemer.engine, link, recorded=True)
    result = judged(checked, state)
    valid = result.outcome is Outcome.SUCCESS
    return InspectResponse(
        valid=valid,
        reason=None if valid else _REASONS[result.outcome],
        link=InspectedLink(
            id=link.link_id,
            action=link.action,
            subject=link.subject,
            data=link.data,
            expires_at=link.expires_at_datetime,
            max_uses=link.max_uses,
            uses=state.recorded_uses,
        ),
    )
