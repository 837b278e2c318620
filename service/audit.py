"""The audit log: a client's redemptions, newest first, with their webhook delivery.

Pages are keyset-paginated on ``redemptions.seq`` (a sequence: newer rows
have larger values). A cursor is the last ``seq`` of a page, signed
(``Purpose.CURSOR``) together with the client and the filters it was made
for, so it cannot be edited, replayed by another client or reused with other
filters. The next page is ``seq < cursor``: redemptions recorded meanwhile
have larger ``seq`` and cannot push rows across a page boundary, so paging
neither repeats nor skips a row.

Each row is read with its delivery job in the same query (``LEFT JOIN``);
a redemption without a job has delivery status ``none``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import NotFound, ValidationFailed
from service.models import Delivery, Redemption
from service.schemas import DeliveryOut, RedemptionOut, RedemptionPage
from service.tokens import BadData, Purpose, TokenCodec

NO_DELIVERY = "none"
REDEMPTION_ID = re.compile(r"[\x21-\x7e]{1,80}")  # what could be stored; NUL never


@dataclass(frozen=True, slots=True)
class Filters:
    link_id: str | None = None
    subject: str | None = None
    action: str | None = None

    def wire(self) -> list[str | None]:
        return [self.link_id, self.subject, self.action]


class InvalidCursor(ValidationFailed):
    def __init__(self, why: str) -> None:
        super().__init__(
            f"the cursor is not valid: {why}",
            errors=[{"loc": ["query", "cursor"], "msg": why, "type": "invalid_cursor"}],
        )


def encode_cursor(codec: TokenCodec, client_id: str, filters: Filters, seq: int) -> str:
    return codec.sign(Purpose.CURSOR, {"c": client_id, "f": filters.wire(), "s": seq})


def decode_cursor(codec: TokenCodec, client_id: str, filters: Filters, cursor: str) -> int:
    """The ``seq`` a page continues below; ``InvalidCursor`` for anything else."""
    try:
        payload = codec.verify(Purpose.CURSOR, cursor)
    except BadData:
        raise InvalidCursor("it was not issued by this service or was altered") from None
    if not isinstance(payload, dict) or payload.get("c") != client_id:
        raise InvalidCursor("it belongs to another client")
    if payload.get("f") != filters.wire():
        raise InvalidCursor("pass the same link_id, subject and action as for the first page")
    seq = payload.get("s")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise InvalidCursor("malformed")
    return seq


def _with_delivery() -> Select[Any]:
    return select(
        Redemption.seq,
        Redemption.id,
        Redemption.link_id,
        Redemption.action,
        Redemption.subject,
        Redemption.data,
        Redemption.use,
        Redemption.max_uses,
        Redemption.redeemed_at,
        Delivery.status,
        Delivery.attempts,
        Delivery.last_error,
    ).outerjoin(Delivery, Delivery.redemption_id == Redemption.id)


def _out(row: Any) -> RedemptionOut:
    return RedemptionOut(
        id=row.id,
        link_id=row.link_id,
        action=row.action,
        subject=row.subject,
        data=row.data,
        use=row.use,
        max_uses=row.max_uses,
        redeemed_at=row.redeemed_at,
        delivery=DeliveryOut(
            status=row.status or NO_DELIVERY,
            attempts=row.attempts or 0,
            last_error=row.last_error,
        ),
    )


async def list_redemptions(
    session: AsyncSession,
    codec: TokenCodec,
    client_id: str,
    filters: Filters,
    limit: int,
    cursor: str | None,
) -> RedemptionPage:
    """One page of the client's redemptions, newest first, and the cursor of the next."""
    statement = _with_delivery().where(Redemption.client_id == client_id)
    if filters.link_id is not None:
        statement = statement.where(Redemption.link_id == filters.link_id)
    if filters.subject is not None:
        statement = statement.where(Redemption.subject == filters.subject)
    if filters.action is not None:
        statement = statement.where(Redemption.action == filters.action)
    if cursor is not None:
        statement = statement.where(
            Redemption.seq < decode_cursor(codec, client_id, filters, cursor)
        )
    statement = statement.order_by(Redemption.seq.desc()).limit(limit + 1)
    rows = (await session.execute(statement)).all()
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(codec, client_id, filters, page[-1].seq)
    return RedemptionPage(items=[_out(row) for row in page], next_cursor=next_cursor)


async def get_redemption(
    session: AsyncSession, client_id: str, redemption_id: str
) -> RedemptionOut:
    """One of the client's redemptions; another client's id is as unknown as a made-up one."""
    if not REDEMPTION_ID.fullmatch(redemption_id):
        raise NotFound(f"client '{client_id}' has no such redemption")
    statement = _with_delivery().where(
        Redemption.client_id == client_id, Redemption.id == redemption_id
    )
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        raise NotFound(f"client '{client_id}' has no redemption '{redemption_id[:80]}'")
    return _out(row)
