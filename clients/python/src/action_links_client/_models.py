"""The contract's records as frozen dataclasses, each read from its JSON once, here.

Tokens, URLs and codes are capabilities: they stay out of every ``repr``, so
a logged ``Link`` or ``Redemption`` does not hand out the link.

Fields the contract added after the first servers (``once_key``, ``via``,
``exchanged_at`` of a redemption) read as None from a server that does not
send them yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _time(value: Any) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return parsed


def _optional_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


@dataclass(frozen=True)
class MintRequest:
    """One link to mint; only the fields set here are sent, so the action's defaults apply."""

    action: str
    subject: str | None = None
    data: Any = field(default=None, hash=False)
    expires_in: int | None = None
    max_uses: int | None = None
    once_key: str | None = None
    success_url: str | None = None
    failure_url: str | None = None
    code: bool | None = None
    supersede: bool = False

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"action": self.action}
        optional = {
            "subject": self.subject,
            "data": self.data,
            "expires_in": self.expires_in,
            "max_uses": self.max_uses,
            "once_key": self.once_key,
            "success_url": self.success_url,
            "failure_url": self.failure_url,
            "code": self.code,
        }
        body.update((name, value) for name, value in optional.items() if value is not None)
        if self.supersede:
            body["supersede"] = True
        return body


@dataclass(frozen=True)
class Link:
    """A minted link: mail ``url`` (and ``headers`` for one-click actions), keep ``id``.

    ``code`` is the 6-digit code a person may type instead of following the
    link, when the link has one; ``token`` is what ``inspect`` and
    ``redeem_code`` take (keep it server-side).
    """

    id: str
    url: str = field(repr=False)
    token: str = field(repr=False)
    action: str
    subject: str | None
    expires_at: datetime
    max_uses: int | None
    code: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)

    @classmethod
    def from_json(cls, body: Any) -> Link:
        return cls(
            id=body["id"],
            url=body["url"],
            token=body["token"],
            action=body["action"],
            subject=body.get("subject"),
            expires_at=_time(body["expires_at"]),
            max_uses=body.get("max_uses"),
            code=body.get("code"),
            headers=dict(body.get("headers") or {}),
        )


@dataclass(frozen=True)
class LinkStatus:
    """How often a link was used, and whether it was revoked."""

    id: str
    uses: int
    revoked: bool
    first_redeemed_at: datetime | None
    last_redeemed_at: datetime | None

    @classmethod
    def from_json(cls, body: Any) -> LinkStatus:
        return cls(
            id=body["id"],
            uses=body["uses"],
            revoked=body["revoked"],
            first_redeemed_at=_optional_time(body.get("first_redeemed_at")),
            last_redeemed_at=_optional_time(body.get("last_redeemed_at")),
        )


@dataclass(frozen=True)
class InspectedLink:
    """What a valid-looking token carries, and its uses so far."""

    id: str
    action: str
    subject: str | None
    data: Any = field(hash=False)
    expires_at: datetime
    max_uses: int | None
    uses: int

    @classmethod
    def from_json(cls, body: Any) -> InspectedLink:
        return cls(
            id=body["id"],
            action=body["action"],
            subject=body.get("subject"),
            data=body.get("data"),
            expires_at=_time(body["expires_at"]),
            max_uses=body.get("max_uses"),
            uses=body["uses"],
        )


@dataclass(frozen=True)
class Inspection:
    """Whether a token would redeem now; ``reason`` says why not
    (``invalid``, ``expired``, ``used``, ``revoked``, ``disabled``)."""

    valid: bool
    reason: str | None
    link: InspectedLink | None

    @classmethod
    def from_json(cls, body: Any) -> Inspection:
        link = body.get("link")
        return cls(
            valid=body["valid"],
            reason=body.get("reason"),
            link=None if link is None else InspectedLink.from_json(link),
        )


@dataclass(frozen=True)
class Delivery:
    """The webhook of a redemption: ``none``, ``pending``, ``delivered`` or ``failed``."""

    status: str
    attempts: int
    last_error: str | None

    @classmethod
    def from_json(cls, body: Any) -> Delivery:
        return cls(
            status=body["status"], attempts=body["attempts"], last_error=body.get("last_error")
        )


@dataclass(frozen=True)
class Redemption:
    """One accepted use of a link, from the audit log (or an exchange, or a typed code)."""

    id: str
    link_id: str
    action: str
    subject: str | None
    data: Any = field(hash=False)
    use: int
    max_uses: int | None
    once_key: str | None
    via: str | None  # "link", "code" or "one_click"
    redeemed_at: datetime
    exchanged_at: datetime | None
    delivery: Delivery

    @classmethod
    def from_json(cls, body: Any) -> Redemption:
        return cls(
            id=body["id"],
            link_id=body["link_id"],
            action=body["action"],
            subject=body.get("subject"),
            data=body.get("data"),
            use=body["use"],
            max_uses=body.get("max_uses"),
            once_key=body.get("once_key"),
            via=body.get("via"),
            redeemed_at=_time(body["redeemed_at"]),
            exchanged_at=_optional_time(body.get("exchanged_at")),
            delivery=Delivery.from_json(body["delivery"]),
        )


@dataclass(frozen=True)
class RedemptionPage:
    """One page of the audit log; ``next_cursor`` is None on the last."""

    items: list[Redemption]
    next_cursor: str | None

    @classmethod
    def from_json(cls, body: Any) -> RedemptionPage:
        return cls(
            items=[Redemption.from_json(item) for item in body["items"]],
            next_cursor=body.get("next_cursor"),
        )
