"""Resend after expiry: an expired link's hint buys a replacement link.

An ``error=expired`` failure redirect carries ``resend=<hint>``
(``TokenCodec.sign_resend``): the expired link's claims, signed with their own
salt, with the second the hint was issued. The caller's page offers "send me a
new link"; its backend sends the hint back (``POST /v1/links/resend``) and gets
a mint response, made by the same minting code as ``POST /v1/links`` from what
the old link carried: action, subject, data, once key, use limit, redirect
URLs and typed-code setting, with the action's default lifetime. Like every
mint but ``supersede``, it writes nothing; ``supersede`` is not carried (the old
link is dead anyway, and a resend is no reason to kill the subject's others).

A hint of another client or one that does not verify is ``404 not_found``;
one older than ``RESEND_MAX_AGE`` is ``410 resend_expired``. The action must
still exist and be enabled: the mint answers as it would for a new request.
"""

from __future__ import annotations

from datetime import datetime

from service.errors import NotFound, ResendExpired
from service.schemas import LinkRequest
from service.tokens import BadData, TokenCodec

RESEND_MAX_AGE = 7 * 24 * 3600
"""Seconds a resend hint stays good for, counted from the failure redirect that carried it."""


def replacement_request(codec: TokenCodec, client_id: str, hint: str, now: datetime) -> LinkRequest:
    """The mint request for the replacement of the link in ``hint``, for ``client_id``.

    Its ``max_uses`` is the old link's as it was minted (null: unlimited), not a
    default to fill in: mint it with ``Minter.mint(..., exact_max_uses=True)``.
    """
    try:
        claims = codec.verify_resend(hint)
    except BadData:
        claims = None
    if claims is None or claims.link.client_id != client_id:
        raise NotFound(f"this is no resend hint of client '{client_id}'")
    if int(now.timestamp()) - claims.issued_at > RESEND_MAX_AGE:
        raise ResendExpired("the resend hint is older than 7 days")
    link = claims.link
    return LinkRequest.model_construct(
        action=link.action,
        subject=link.subject,
        data=link.data,
        expires_in=None,
        max_uses=link.max_uses,
        once_key=link.once_key,
        success_url=link.success_url,
        failure_url=link.failure_url,
        code=link.code,
        supersede=False,
    )
