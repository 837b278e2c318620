"""The typed-code door: a person types a link's 6 digits instead of following the link.

A link minted with ``code`` carries a 6-digit code (``TokenCodec.typed_code``,
an HMAC of the link, so minting writes nothing). When the link opens on the
wrong device, or a mail app breaks it, the person types the code into the
caller's page; the caller's backend, which kept the link's token, sends both
(``POST /v1/links/redeem``). Then:

1. The token must be a genuine link of this client (else ``404 not_found``)
   minted with a code (else ``422 code_not_enabled``).
2. Disabled and expired links are refused as following them would be.
3. The code is compared in constant time. A wrong one is counted in the
   database (``Store.add_code_failure``, atomic, so the count holds across
   every process) and answers ``422 wrong_code`` with ``attempts_left``;
   after ``MAX_CODE_FAILURES`` the link's code is locked (``429
   code_locked``), a right code included. The link's URL still works: the
   lock is on guessing, not on the link.
4. The very claim following the link makes (``Redeemer.redeem_resolved``,
   ``via: "code"``): counter, once key, revocations, audit row, webhook and
   ``sync`` veto. ``refusal`` turns its outcome into the problem whose
   ``code`` is the word the link's redirect would carry in ``error=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.errors import CodeLocked, CodeNotEnabled, LinkRefused, NotFound, WrongCode
from service.redeem import Outcome, Redeemer, Redemption, utcnow
from service.store import AuditEntry, Via
from service.tokens import BadData, LinkClaims

MAX_CODE_FAILURES = 5
IGNORED_IN_CODES = str.maketrans("", "", " -")  # "482 913" and "482-913" are "482913"

# The one table from a redemption's outcome to the JSON answer of this door.
REFUSALS: dict[Outcome, tuple[int, str, str]] = {
    Outcome.USED: (409, "Link used", "the link has no use left"),
    Outcome.EXPIRED: (410, "Link expired", "the link has expired"),
    Outcome.REVOKED: (410, "Link revoked", "the link was revoked"),
    Outcome.DISABLED: (403, "Link disabled", "the link's action is disabled or deleted"),
    Outcome.REJECTED: (409, "Refused by the webhook", "the webhook receiver refused it"),
    Outcome.UNAVAILABLE: (
        503,
        "Webhook unavailable",
        "the webhook receiver could not be reached; the use was given back, try again",
    ),
}


def refusal(result: Redemption) -> LinkRefused:
    """The problem for a redemption that did not succeed (``REFUSALS``)."""
    status, title, detail = REFUSALS[result.outcome]
    extra = {"reason": result.reason} if result.outcome is Outcome.REJECTED else {}
    return LinkRefused(status, result.outcome.value, title, detail, **extra)


@dataclass(frozen=True, slots=True)
class CodeDoor:
    redeemer: Redeemer

    async def redeem(
        self, client_id: str, token: str, code: str, now: datetime | None = None
    ) -> Redemption:
        """Redeem ``token`` for ``client_id`` if ``code`` is its typed code.

        Raises the code's own problems (404, 422, 429); the redemption's
        outcome comes back as following the link would give it.
        """
        now = now or utcnow()
        link = self._own_link(client_id, token)
        if not link.code:
            raise CodeNotEnabled("this link was minted without a typed code")
        checked = await self.redeemer.resolve_link(link, now)
        if checked.outcome is not Outcome.SUCCESS:
            return checked
        await self._check(link, code)
        return await self.redeemer.redeem_resolved(checked, now, via=Via.CODE)

    async def answer(self, result: Redemption) -> AuditEntry:
        """The redemption as the audit log holds it now, or the problem for the outcome."""
        if result.outcome is not Outcome.SUCCESS:
            raise refusal(result)
        assert result.link is not None
        assert result.record is not None
        entry = await self.redeemer.store.redemption(
            result.link.client_id, result.record.redemption_id
        )
        if entry is None:  # purged between the claim and this read: a retention of ~0 days
            raise NotFound("the redemption is no longer in the audit log")
        return entry

    def _own_link(self, client_id: str, token: str) -> LinkClaims:
        try:
            link = self.redeemer.codec.verify_link(token)
        except BadData:
            link = None
        if link is None or link.client_id != client_id:
            raise NotFound(f"this is no link of client '{client_id}'")
        return link

    async def _check(self, link: LinkClaims, code: str) -> None:
        """Pass a right code of an unlocked link; count and refuse anything else."""
        store = self.redeemer.store
        if self.redeemer.codec.typed_code_matches(link, code.translate(IGNORED_IN_CODES)):
            failures = await store.code_failures(link.client_id, link.link_id)
            if failures >= MAX_CODE_FAILURES:
                raise _locked()
            return
        counted = await store.add_code_failure(
            link.client_id, link.link_id, link.expires_at_datetime, MAX_CODE_FAILURES
        )
        if counted is None:
            raise _locked()
        left = MAX_CODE_FAILURES - counted
        raise WrongCode(f"that is not the link's code; {left} attempt(s) left", attempts_left=left)


def _locked() -> CodeLocked:
    return CodeLocked(
        f"{MAX_CODE_FAILURES} wrong codes were entered for this link; its code is locked "
        "(following the link still works)"
    )
