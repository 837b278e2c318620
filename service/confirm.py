"""The gate in front of redemption: confirmation pages, so that scanners burn nothing.

Mail scanners and chat unfurlers fetch every link before the person does. For
an action with ``confirm: "page"`` or ``"auto"`` a GET therefore only shows a
page; the use is claimed by the POST of that page's form, which carries a
*confirmation nonce*: a signed token (``TokenCodec.sign_confirm``) naming the
link and the second it was issued. Issuing one writes nothing, and a POST
is accepted only with a nonce of the same link that is at most
``NONCE_MAX_AGE`` seconds old. A bare POST, one with another link's nonce or
an old one redeems nothing and gets the page again, with a fresh nonce.

What a visitor is shown for a link that can no longer be redeemed (expired,
used, revoked, disabled) comes from ``Redeemer.inspect_resolved``: a read, never a
write, so a GET or HEAD has no side effect in any mode, and someone who comes
back to a link they already used is told so.

Actions with ``confirm: "none"`` redeem on GET and POST as before.

RFC 8058 one-click unsubscribe is the one POST that needs no nonce: a mail
provider posts ``List-Unsubscribe=One-Click`` to the link of a ``one_click``
action, with no cookie and no page in between, and it redeems whatever the
``confirm`` mode (``Gate.one_click``, ``via: "one_click"``). The body is the
consent: scanners GET and HEAD, and neither redeems a confirm link.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.redeem import Outcome, Redeemer, Redemption, utcnow
from service.registry import ActionConfig, ClientConfig
from service.store import Via
from service.tokens import BadData, ConfirmClaims, LinkClaims

CONFIRM_MODES = frozenset({"page", "auto"})
NONCE_MAX_AGE = 3600
"""Seconds a confirmation page's form stays good for; after that it asks again."""
NONCE_CLOCK_SKEW = 60
"""Seconds a nonce may seem to come from the future (processes on other machines)."""


@dataclass(frozen=True, slots=True)
class Confirmation:
    """Show the confirmation page for this link; nothing was claimed or recorded.

    ``refused`` is set when a POST came without a valid nonce: the page then
    says that nothing was done and offers the button again.
    """

    link: LinkClaims
    client: ClientConfig
    action: ActionConfig
    nonce: str
    refused: bool = False

    @property
    def auto(self) -> bool:
        return self.action.confirm == "auto"

    @property
    def sender(self) -> str:
        return self.client.name

    @property
    def what(self) -> str:
        """What the link does, in words: the action's label, else its name made readable."""
        if self.action.label:
            return self.action.label
        words = self.action.name.replace("_", " ").replace("-", " ").strip()
        return words[:1].upper() + words[1:] if words else self.action.name

    @property
    def targets(self) -> tuple[str, ...]:
        """Where the form's POST may redirect to: the link's success and failure URLs."""
        urls = (
            self.link.success_url or self.action.success_url,
            self.link.failure_url or self.action.failure_url,
        )
        return tuple(url for url in urls if url)


def needs_confirmation(checked: Redemption) -> bool:
    """A link that would redeem now, of an action that wants a confirmation first."""
    return (
        checked.outcome is Outcome.SUCCESS
        and checked.action is not None
        and checked.action.confirm in CONFIRM_MODES
    )


@dataclass(frozen=True, slots=True)
class Gate:
    """What ``/r/{token}`` does for each method; the router only renders the answer."""

    redeemer: Redeemer

    async def open(self, token: str, now: datetime | None = None) -> Redemption | Confirmation:
        """GET: redeem a ``confirm: "none"`` link; otherwise only show where it stands."""
        now = now or utcnow()
        checked = await self.redeemer.resolve(token, now)
        if not needs_confirmation(checked):
            return await self.redeemer.redeem_resolved(checked, now)
        return await self._confirmation(checked, now, refused=False)

    async def submit(
        self, token: str, nonce: str | None, now: datetime | None = None
    ) -> Redemption | Confirmation:
        """POST: redeem, if the link needs no confirmation or ``nonce`` confirms it."""
        now = now or utcnow()
        checked = await self.redeemer.resolve(token, now)
        if not needs_confirmation(checked) or self._confirms(nonce, checked, now):
            return await self.redeemer.redeem_resolved(checked, now)
        return await self._confirmation(checked, now, refused=True)

    async def one_click(self, token: str, now: datetime | None = None) -> Redemption | None:
        """An RFC 8058 POST: redeem a ``one_click`` action's link whatever its ``confirm``.

        None when the link is known to be of another action: its POST is then
        an ordinary one, under the confirm page's nonce rules. A link that
        cannot be trusted or whose action is gone answers as itself.
        """
        now = now or utcnow()
        checked = await self.redeemer.resolve(token, now)
        if checked.action is not None and not checked.action.one_click:
            return None
        return await self.redeemer.redeem_resolved(checked, now, via=Via.ONE_CLICK)

    async def peek(self, token: str, now: datetime | None = None) -> Redemption | Confirmation:
        """HEAD: what a GET would answer, without redeeming any link."""
        now = now or utcnow()
        checked = await self.redeemer.resolve(token, now)
        if not needs_confirmation(checked):
            return await self.redeemer.inspect_resolved(checked)
        return await self._confirmation(checked, now, refused=False)

    async def _confirmation(
        self, checked: Redemption, now: datetime, *, refused: bool
    ) -> Redemption | Confirmation:
        """The page with a fresh nonce, or the failure, when the link is spent already."""
        state = await self.redeemer.inspect_resolved(checked)
        if state.outcome is not Outcome.SUCCESS:
            return state
        assert state.link is not None
        assert state.client is not None
        assert state.action is not None
        nonce = self.redeemer.codec.sign_confirm(
            ConfirmClaims(state.link.link_id, int(now.timestamp()))
        )
        return Confirmation(state.link, state.client, state.action, nonce, refused)

    def _confirms(self, nonce: str | None, checked: Redemption, now: datetime) -> bool:
        if nonce is None or checked.link is None:
            return False
        try:
            claims = self.redeemer.codec.verify_confirm(nonce)
        except BadData:
            return False
        age = int(now.timestamp()) - claims.issued_at
        return claims.link_id == checked.link.link_id and -NONCE_CLOCK_SKEW <= age <= NONCE_MAX_AGE
