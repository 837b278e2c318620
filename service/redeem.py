"""The redemption use case, top to bottom.

1. Verify the token (no I/O). Nothing in an untrusted token is used.
2. Expired links are refused on their signature alone.
3. The client and action come from the registry cache; disabled or deleted
   ones refuse the link, and so does a success URL no longer within the
   client's ``allowed_redirects``: nothing may be claimed for a person who
   cannot be sent where a success goes.
4. One claim (``Store.claim``): revocations, the use counter, the audit row
   and the outbox job, committed together before anything is returned.
5. Webhooks, after the commit and outside any transaction: ``async`` actions
   make one attempt (skipped while the receiver is known to be down) and the
   person succeeds whatever it answers; ``sync`` actions succeed only if the
   receiver accepts, else the use is given back (``service.settle``: through
   database blips, and by any process if this one cannot).
6. The caller turns the result into a redirect or a page; a success carries
   an exchange code (``code=``) for the caller's backend (``service.exchange``),
   an expiry a resend hint (``resend=``) that buys a replacement (``service.resend``).

The doors: following a link or posting its confirmation page
(``service.confirm``, ``via: "link"``) and a typed code
(``service.typed_code``, ``via: "code"``). Each resolves the link its own
way and then calls ``redeem_resolved``; none claims anything itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from service import settle
from service.delivery import Deliverer
from service.errors import DatabaseUnavailable
from service.redirects import is_allowed, with_query
from service.registry import ActionConfig, ClientConfig, Registry
from service.store import Job, LinkState, RedemptionRecord, Store, Via
from service.tokens import BadData, ExchangeClaims, LinkClaims, ResendClaims, TokenCodec
from service.webhooks import Verdict

log = logging.getLogger(__name__)


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
    record: RedemptionRecord | None = None  # of a SUCCESS that claimed a use
    reason: str | None = None
    exchange_code: str | None = None  # a success's ``code=``: what the caller's backend trades
    resend_hint: str | None = None  # an expiry's ``resend=``: what buys a replacement link

    def target_url(self) -> str | None:
        """Where to send the person, or None when a page must be shown instead."""
        if self.link is None:
            return None  # an untrusted token never redirects
        if self.outcome is Outcome.SUCCESS:
            url = self.link.success_url or (self.action.success_url if self.action else None)
            params = {
                "link_id": self.link.link_id,
                "redemption_id": self.record.redemption_id if self.record else "",
                "code": self.exchange_code or "",
            }
        else:
            url = self.link.failure_url or (self.action.failure_url if self.action else None)
            params = {"error": self.outcome.value, "link_id": self.link.link_id}
            if self.reason:
                params["reason"] = self.reason
            if self.resend_hint:
                params["resend"] = self.resend_hint
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
    store: Store
    deliverer: Deliverer

    async def resolve(self, token: str, now: datetime) -> Redemption:
        """Steps 1-3: everything that can refuse a link before the database is written."""
        try:
            link = self.codec.verify_link(token)
        except BadData:
            return Redemption(Outcome.INVALID)
        return await self.resolve_link(link, now)

    async def resolve_link(self, link: LinkClaims, now: datetime) -> Redemption:
        """Steps 2-3, for a token already verified (and, by the caller, its owner checked)."""
        client = await self.registry.client(link.client_id)
        action = client.action(link.action) if client is not None else None
        if client is None or action is None or not client.enabled or not action.enabled:
            return Redemption(Outcome.DISABLED, link, client, action)
        success_url = link.success_url or action.success_url
        if not is_allowed(success_url, client.allowed_redirects):
            return Redemption(Outcome.DISABLED, link, client, action)
        if link.is_expired(now):
            hint = self.codec.sign_resend(ResendClaims(link, int(now.timestamp())))
            return Redemption(Outcome.EXPIRED, link, client, action, resend_hint=hint)
        return Redemption(Outcome.SUCCESS, link, client, action)

    async def inspect_resolved(self, checked: Redemption) -> Redemption:
        """What redeeming would answer now, for what ``resolve`` answered, without
        claiming or recording anything (a redeemable link comes back as SUCCESS).
        """
        if checked.outcome is not Outcome.SUCCESS:
            return checked
        assert checked.link is not None
        return judged(checked, await self.store.peek(checked.link))

    async def redeem_resolved(
        self, checked: Redemption, now: datetime, via: Via = Via.LINK
    ) -> Redemption:
        """Steps 4-5 for what ``resolve`` answered, through the door ``via``. Database
        errors propagate; the caller answers 503."""
        if checked.outcome is not Outcome.SUCCESS:
            return checked
        assert checked.link is not None
        assert checked.action is not None
        delivery = checked.action.delivery
        inline = self.deliverer.attempts_inline(delivery, checked.link.client_id)
        lease = self.deliverer.lease_until(now) if inline else None
        result = await self.store.claim(
            checked.link,
            now,
            deliver=delivery != "none",
            lease=lease,
            via=via,
            sync=delivery == "sync",
        )
        if result.revoked:
            return _with(checked, Outcome.REVOKED)
        if result.redemption is None:
            return _with(checked, Outcome.USED)
        redeemed = Redemption(
            Outcome.SUCCESS,
            checked.link,
            checked.client,
            checked.action,
            result.redemption,
            exchange_code=self.codec.sign_exchange(
                ExchangeClaims(
                    checked.link.client_id, result.redemption.redemption_id, int(now.timestamp())
                )
            ),
        )
        if lease is None:
            return redeemed
        job = Job(result.redemption, attempts=0, lease=lease)
        if delivery == "sync":
            return await self._deliver_sync(redeemed, job)
        await self._deliver_async(job)
        return redeemed

    async def _deliver_async(self, job: Job) -> None:
        """One inline attempt; whatever happens, the person has succeeded.

        If it cannot even be recorded, the job's lease expires and the
        dispatcher delivers it: the redemption is committed, so no error here
        may turn the person's success into an error page.
        """
        try:
            await self.deliverer.deliver(job)
        except DatabaseUnavailable:
            log.warning("inline delivery not recorded: database unavailable")
        except Exception:
            log.exception("inline delivery of %s failed", job.redemption.redemption_id)

    async def _deliver_sync(self, redeemed: Redemption, job: Job) -> Redemption:
        """The receiver decides: accepted → success; otherwise the use is given back.

        ``DatabaseUnavailable`` when its acceptance could not be recorded in time."""
        attempt = await self.deliverer.attempt(job.redemption)
        if attempt.delivered and await settle.accept(self.store, job):
            return redeemed
        if not attempt.delivered:
            await settle.give_back(self.store, job)
        refused = attempt.verdict is Verdict.REJECTED
        return Redemption(
            Outcome.REJECTED if refused else Outcome.UNAVAILABLE,
            redeemed.link,
            redeemed.client,
            redeemed.action,
            reason=attempt.reason if refused else None,
        )


def judged(checked: Redemption, state: LinkState) -> Redemption:
    """The answer for a link ``resolve`` let through, given its counter and revocations."""
    if checked.outcome is not Outcome.SUCCESS:
        return checked
    assert checked.link is not None
    if state.revoked:
        return _with(checked, Outcome.REVOKED)
    if state.exhausted(checked.link.max_uses):
        return _with(checked, Outcome.USED)
    return checked


def _with(base: Redemption, outcome: Outcome) -> Redemption:
    return Redemption(outcome, base.link, base.client, base.action)
