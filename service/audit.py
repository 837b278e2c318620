"""The audit log: a client's redemptions, newest first, with their webhook delivery.

Pages are keyset-paginated on ``redemptions.seq`` (a sequence: newer rows
have larger values). A cursor is the last ``seq`` of a page, signed
(``Purpose.CURSOR``) together with the client and the filters it was made
for, so it cannot be edited, replayed by another client or reused with other
filters. The next page is ``seq < cursor``: redemptions recorded meanwhile
have larger ``seq`` and cannot push rows across a page boundary, so paging
neither repeats nor skips a row.

Each row is read with its delivery job (``Store.redemptions``); a redemption
without a job has delivery status ``none``.
"""

from __future__ import annotations

import re

from service.errors import NotFound, ValidationFailed
from service.json_depth import shown
from service.schemas import DeliveryOut, RedemptionOut, RedemptionPage
from service.store import AuditEntry, Filters, Store
from service.tokens import BadData, Purpose, TokenCodec

NO_DELIVERY = "none"
REDEMPTION_ID = re.compile(r"[\x21-\x7e]{1,80}")  # what could be stored; NUL never


def _wire(filters: Filters) -> list[str | None]:
    return [filters.link_id, filters.subject, filters.action]


class InvalidCursor(ValidationFailed):
    def __init__(self, why: str) -> None:
        super().__init__(
            f"the cursor is not valid: {why}",
            errors=[{"loc": ["query", "cursor"], "msg": why, "type": "invalid_cursor"}],
        )


def encode_cursor(codec: TokenCodec, client_id: str, filters: Filters, seq: int) -> str:
    return codec.sign(Purpose.CURSOR, {"c": client_id, "f": _wire(filters), "s": seq})


def decode_cursor(codec: TokenCodec, client_id: str, filters: Filters, cursor: str) -> int:
    """The ``seq`` a page continues below; ``InvalidCursor`` for anything else."""
    try:
        payload = codec.verify(Purpose.CURSOR, cursor)
    except BadData:
        raise InvalidCursor("it was not issued by this service or was altered") from None
    if not isinstance(payload, dict) or payload.get("c") != client_id:
        raise InvalidCursor("it belongs to another client")
    if payload.get("f") != _wire(filters):
        raise InvalidCursor("pass the same link_id, subject and action as for the first page")
    seq = payload.get("s")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise InvalidCursor("malformed")
    return seq


def redemption_out(entry: AuditEntry) -> RedemptionOut:
    """A redemption as every answer of the API shows it (audit log, exchange, typed code)."""
    redemption, delivery = entry.redemption, entry.delivery
    return RedemptionOut(
        id=redemption.redemption_id,
        link_id=redemption.link_id,
        action=redemption.action,
        subject=redemption.subject,
        data=shown(redemption.data),
        use=redemption.use,
        max_uses=redemption.max_uses,
        once_key=redemption.once_key,
        via=redemption.via,
        redeemed_at=redemption.redeemed_at,
        exchanged_at=redemption.exchanged_at,
        delivery=DeliveryOut(
            status=delivery.status or NO_DELIVERY,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
        ),
    )


async def list_redemptions(
    store: Store,
    codec: TokenCodec,
    client_id: str,
    filters: Filters,
    limit: int,
    cursor: str | None,
) -> RedemptionPage:
    """One page of the client's redemptions, newest first, and the cursor of the next."""
    before = None if cursor is None else decode_cursor(codec, client_id, filters, cursor)
    entries = await store.redemptions(client_id, filters, before, limit + 1)
    page = entries[:limit]
    next_cursor = None
    if len(entries) > limit:
        next_cursor = encode_cursor(codec, client_id, filters, page[-1].seq)
    return RedemptionPage(items=[redemption_out(entry) for entry in page], next_cursor=next_cursor)


async def get_redemption(store: Store, client_id: str, redemption_id: str) -> RedemptionOut:
    """One of the client's redemptions; another client's id is as unknown as a made-up one."""
    if not REDEMPTION_ID.fullmatch(redemption_id):
        raise NotFound(f"client '{client_id}' has no such redemption")
    entry = await store.redemption(client_id, redemption_id)
    if entry is None:
        raise NotFound(f"client '{client_id}' has no redemption '{redemption_id[:80]}'")
    return redemption_out(entry)
