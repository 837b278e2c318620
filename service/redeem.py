"""The redemption use case, top to bottom.

1. Verify the token (no I/O). Nothing in an untrusted token is used.
2. Expired links are refused on their signature alone.
3. The client and action come from the registry cache; disabled or deleted
   ones refuse the link.
4. One claim (``service.claim``): revocations, the use counter, the audit row
   and the outbox job, committed together before anything is returned.
5. The caller turns the result into a redirect or a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncEngine

from service.claim import claim, peek
from service.redirects import is_allowed, with_query
from service.registry import ActionConfig, ClientConfig, Registry
from service.tokens import BadData, LinkClaims, TokenCodec


class Outcome(StrEnum):
    SUCCESS = "success"
    INVALID = "invalid"
    EXPIRED = "expired"
    USED = "used"
    REVOKED = "revoked"
    DISABLED = "disabled"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Redemption:
    """What happened to one redemption attempt, and everything needed to answer it."""

    outcome: Outcome
    link: LinkClaims | None = None
    client: ClientConfig | None = None
    action: ActionConfig | None = None
    redemption_id: str | None = None
    use: int | None = None
    reason: str | None = None

    def target_url(self) -> str | None:
        """Where to send the person, or None when a page must be shown instead."""
        if self.link is None:
            return None  # an untrusted token never redirects
        if self.outcome is Outcome.SUCCESS:
            url = self.link.success_url or (self.action.success_url if self.action else None)
            params = {"link_id": self.link.link_id, "redemption_id": self.redemption_id or ""}
        else:
            url = self.link.failure_url or (self.action.failure_url if self.action else None)
            params = {"error": self.outcome.value, "link_id": self.link.link_id}
            if self.reason:
                params["reason"] = self.reason
        if url is None:
            return None
        # The allowlist is checked again: it may have shrunk since the link was minted.
        if self.client is not None and not is_allowed(url, self.client.allowed_redirects):
            return None
        return with_query(url, params)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Redeemer:
    codec: TokenCodec
    registry: Registry
    engine: AsyncEngine

    async def resolve(self, token: str, now: datetime) -> Redemption:
        """Steps 1-3: everything that can refuse a link before the database is written."""
        try:
            link = self.codec.verify_link(token)
        except BadData:
            return Redemption(Outcome.INVALID)
        client = await self.registry.client(link.client_id)
        action = client.action(link.action) if client is not None else None
        if client is None or action is None or not client.enabled or not action.enabled:
            return Redemption(Outcome.DISABLED, link, client, action)
        if link.is_expired(now):
            return Redemption(Outcome.EXPIRED, link, client, action)
        return Redemption(Outcome.SUCCESS, link, client, action)

    async def inspect(self, token: str, now: datetime | None = None) -> Redemption:
        """What redeeming would answer now, without claiming or recording anything.

        A redeemable link comes back as SUCCESS with ``use`` = the uses so far.
        """
        return await self.inspect_resolved(await self.resolve(token, now or utcnow()))

    async def inspect_resolved(self, checked: Redemption) -> Redemption:
        """``inspect`` for what ``resolve`` answered (callers that resolved already)."""
        if checked.outcome is not Outcome.SUCCESS:
            return checked
        assert checked.link is not None
        state = await peek(self.engine, checked.link)
        if state.revoked:
            return _with(checked, Outcome.REVOKED)
        if checked.link.max_uses is not None and state.uses >= checked.link.max_uses:
            return _with(checked, Outcome.USED)
        return Redemption(
            Outcome.SUCCESS, checked.link, checked.client, checked.action, use=state.uses
        )

    async def redeem(self, token: str, now: datetime | None = None) -> Redemption:
        """Steps 1-4. Database errors propagate; the caller answers 503."""
        now = now or utcnow()
        return await self.redeem_resolved(await self.resolve(token, now), now)

    async def redeem_resolved(self, checked: Redemption, now: datetime) -> Redemption:
        """Step 4 for what ``resolve`` answered (callers that resolved already)."""
        if checked.outcome is not Outcome.SUCCESS:
            return checked
        assert checked.link is not None
        assert checked.action is not None
        result = await claim(
            self.engine, checked.link, now, deliver=checked.action.delivery != "none"
        )
        if result.revoked:
            return _with(checked, Outcome.REVOKED)
        if not result.claimed:
            return _with(checked, Outcome.USED)
        return Redemption(
            Outcome.SUCCESS,
            checked.link,
            checked.client,
            checked.action,
            redemption_id=result.redemption_id,
            use=result.use,
        )


def _with(base: Redemption, outcome: Outcome) -> Redemption:
    return Redemption(outcome, base.link, base.client, base.action)
