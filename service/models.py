"""The tables. Minting writes none of them: they hold only what redemption needs.

- ``clients``, ``api_keys``, ``actions``: configuration, cached by ``registry``.
- ``claims``: one use counter per link, or per (client, once key).
- ``revocations``, ``subject_revocations``: what was taken back, until it cannot matter.
- ``redemptions``: the audit log, one row per accepted use.
- ``deliveries``: the webhook outbox, one job per redemption of a webhook action.
- ``code_failures``: wrong typed codes per link, until the link expires.
- ``failure_counters``: failed attempts per client address, for the abuse limits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ALL_ACTIONS = "*"
"""``subject_revocations.action`` for a revocation that covers every action."""


class UTCDateTime(TypeDecorator[datetime]):
    """Time-zone-aware UTC timestamps on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_secret: Mapped[str] = mapped_column(Text)
    allowed_redirects: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]


class Action(Base):
    __tablename__ = "actions"

    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str | None] = mapped_column(String(200))
    success_url: Mapped[str] = mapped_column(Text)
    failure_url: Mapped[str | None] = mapped_column(Text)
    ttl: Mapped[int] = mapped_column(Integer)
    max_ttl: Mapped[int] = mapped_column(Integer)
    max_uses: Mapped[int | None] = mapped_column(Integer)
    confirm: Mapped[str] = mapped_column(String(8))
    delivery: Mapped[str] = mapped_column(String(8))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    code: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    one_click: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Claim(Base):
    """A use counter. ``key`` is ``l:<link id>`` or ``o:<once key>``.

    ``uses`` counts the uses taken; ``issued`` the use numbers handed out,
    which only grows: a ``sync`` use given back lowers ``uses`` alone, so no
    two accepted redemptions of a counter share a number. ``max_uses`` is the
    size of the budget, written by the first use (for a once key, the size
    every later link of the key draws on too).

    No foreign key to ``clients``: the hot path must not pay for one, and a
    counter outlives nothing but its link (``expires_at``; NULL for once keys,
    whose budgets are kept forever).
    """

    __tablename__ = "claims"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    uses: Mapped[int] = mapped_column(Integer)
    issued: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_uses: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    first_used_at: Mapped[datetime]
    last_used_at: Mapped[datetime]


class Revocation(Base):
    __tablename__ = "revocations"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    link_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    revoked_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SubjectRevocation(Base):
    """Links of ``subject`` issued before ``revoked_at`` are dead (``action`` ``*``: all)."""

    __tablename__ = "subject_revocations"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    action: Mapped[str] = mapped_column(String(64), primary_key=True)
    revoked_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


SINGLE_USE = "max_uses = 1 AND once_key IS NULL"  # an audit row of a single-use link
# Every other audit row (``max_uses`` NULL is unlimited: the complement in SQL's
# three-valued logic). Written out the same way in the index and in the queries that
# use it, so that PostgreSQL and SQLite see the index's condition in the query's.
NOT_SINGLE_USE = "(max_uses IS NULL OR max_uses <> 1 OR once_key IS NOT NULL)"


class Redemption(Base):
    """One accepted use. ``seq`` orders the audit log; ``id`` is the time in milliseconds
    (11 hex digits) and 96 random bits (``new_redemption_id``; older rows: random only).

    ``via`` is the door it came through (``link``, ``code``, ``one_click``);
    ``exchanged_at`` is set once, when the caller's backend received it server
    to server (the exchange of its code, or the answer to a typed code).
    """

    __tablename__ = "redemptions"

    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(80), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    link_id: Mapped[str] = mapped_column(String(64))
    claim_key: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    use: Mapped[int] = mapped_column(Integer)
    max_uses: Mapped[int | None] = mapped_column(Integer)
    # No index: purge walks ``seq`` instead (0008: one index entry fewer per use).
    redeemed_at: Mapped[datetime]
    once_key: Mapped[str | None] = mapped_column(Text)
    via: Mapped[str] = mapped_column(String(16), server_default=text("'link'"))
    exchanged_at: Mapped[datetime | None]
    # The link's expiry, on the audit row of a single-use link that is its own claim
    # (no counter row, migration 0006): purging the row before then gives the link a
    # used-up counter first (``COUNTERS_FOR_PURGED_CLAIMS``).
    claim_expires_at: Mapped[datetime | None]

    __table_args__ = (
        # At most one audit row per single-use link: what makes its claim exactly-once.
        Index(
            "ux_redemptions_single_use",
            "client_id",
            "claim_key",
            unique=True,
            postgresql_where=text(SINGLE_USE),
            sqlite_where=text(SINGLE_USE),
        ),
        Index("ix_redemptions_client_seq", "client_id", "seq"),
        # A link's audit rows: a single-use link's one row is found by its claim's index
        # above (its claim key is ``l:`` and the link id), so this index holds only the
        # others and a first use writes one link-keyed index entry, not two (0007).
        Index(
            "ix_redemptions_client_link_seq",
            "client_id",
            "link_id",
            "seq",
            postgresql_where=text(NOT_SINGLE_USE),
            sqlite_where=text(NOT_SINGLE_USE),
        ),
        # A subject filter never matches a row without a subject (0007).
        Index(
            "ix_redemptions_client_subject_seq",
            "client_id",
            "subject",
            "seq",
            postgresql_where=text("subject IS NOT NULL"),
            sqlite_where=text("subject IS NOT NULL"),
        ),
        Index("ix_redemptions_client_action_seq", "client_id", "action", "seq"),
    )


class CodeFailure(Base):
    """Wrong typed codes entered for one link; at ``MAX_CODE_FAILURES`` its code is locked.

    Bounded like a use counter: deleted by ``service.purge`` once the link
    has expired (``expires_at``), since an expired link is refused anyway.
    """

    __tablename__ = "code_failures"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    link_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Delivery(Base):
    """The outbox: one webhook job per redemption, committed with it.

    The body and ``webhook-id`` are derived from the redemption row, so every
    attempt sends the same message under the same id.

    ``status``: ``pending`` (due at ``next_attempt_at``), ``delivered``,
    ``failed``, or ``deciding``: a ``sync`` redemption whose receiver's verdict
    the redeeming request awaits. The dispatcher never sends a ``deciding``
    job; the request settles it (``delivered``, or the whole redemption given
    back), and one whose lease expired unsettled is given back
    (``service.sync``).
    """

    __tablename__ = "deliveries"

    redemption_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime]
    leased_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        ForeignKeyConstraint(["redemption_id"], ["redemptions.id"], ondelete="CASCADE"),
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_deliveries_deciding",
            "leased_until",
            postgresql_where=text("status = 'deciding'"),
            sqlite_where=text("status = 'deciding'"),
        ),
    )


class FailureCounter(Base):
    """Failed attempts of one kind (``scope``: ``auth``, ``link``) from one client address.

    Written only when an attempt fails (``service.rate_limits``), so genuine
    traffic never touches it. The window starts at the first failure and ends
    at ``expires_at``; the next failure after that starts a new one. Bounded:
    ``service.purge`` deletes counters whose window has passed.
    """

    __tablename__ = "failure_counters"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
