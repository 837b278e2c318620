"""Taking links back and looking at them: revocation, status, inspection.

Links are not stored when minted, so everything here works from what the
database learned later (use counters, audit rows, revocations) plus, for
inspection, the token itself. A client only ever reaches its own links: link
ids carry a tag binding them to their client (``TokenCodec.owns_link_id``),
so an unknown id and another client's id both answer 404, while a client's
own never-redeemed link answers ``uses: 0``.

Revocations are checked by the claim itself (``Store.claim``), in the
redemption's one round trip; this module only writes them. A revocation
row lives as long as a link it could refuse might: ``revoked_at`` plus the
longest lifetime any link can have (``MAX_TTL_CAP``), after which
``service.purge`` deletes it.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from service.errors import NotFound, UnknownAction
from service.json_depth import shown
from service.models import ALL_ACTIONS
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
from service.store import Store
from service.tokens import EPOCH, BadData, TokenCodec, link_claim_key

LONGEST_LINK_LIFETIME = timedelta(seconds=MAX_TTL_CAP)

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


def _require_own_link(codec: TokenCodec, client_id: str, link_id: str) -> None:
    if not codec.owns_link_id(client_id, link_id):
        raise NotFound(f"client '{client_id}' has no link '{link_id[:64]}'")


async def revoke_link(store: Store, codec: TokenCodec, client_id: str, link_id: str) -> None:
    """Revoke one link; revoking it again changes nothing (the first revocation stands)."""
    _require_own_link(codec, client_id, link_id)
    revoked_at = exact_now()
    await store.revoke_link(client_id, link_id, revoked_at, revocation_expiry(revoked_at))


async def revoke_subject(
    store: Store, client: ClientConfig, request: SubjectRevocationRequest
) -> SubjectRevocationOut:
    """Kill every link of ``subject`` (and ``action``, if given) minted before now.

    Revoking the same subject and action again moves ``revoked_at`` forward
    (never back), so the newest revocation is the one that counts.
    """
    if request.action is not None and client.action(request.action) is None:
        # A typo must not look like a successful revocation.
        raise UnknownAction(f"client '{client.id}' has no action '{request.action}'")
    revoked_at = exact_now()
    stored = await store.revoke_subject(
        client.id,
        request.subject,
        request.action if request.action is not None else ALL_ACTIONS,
        revoked_at,
        revocation_expiry(revoked_at),
    )
    return SubjectRevocationOut(subject=request.subject, action=request.action, revoked_at=stored)


async def link_status(store: Store, codec: TokenCodec, client_id: str, link_id: str) -> LinkStatus:
    """Uses and revocation of one of the client's links; never redeemed is ``uses: 0``.

    ``uses`` counts this link's redemptions, also for a link that shares a
    once-key budget. ``revoked`` says whether this link was revoked by id:
    a subject revocation depends on the link's issue time, which only its
    token knows (``inspect`` answers that).
    """
    _require_own_link(codec, client_id, link_id)
    found = await store.usage(client_id, link_id, link_claim_key(link_id))
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
    state = await redeemer.store.peek(link, recorded=True)
    result = judged(checked, state)
    valid = result.outcome is Outcome.SUCCESS
    return InspectResponse(
        valid=valid,
        reason=None if valid else _REASONS[result.outcome],
        link=InspectedLink(
            id=link.link_id,
            action=link.action,
            subject=link.subject,
            data=shown(link.data),
            expires_at=link.expires_at_datetime,
            max_uses=link.max_uses,
            uses=state.recorded_uses,
        ),
    )
