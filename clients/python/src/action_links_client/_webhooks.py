"""Checking a ``link.redeemed`` webhook before acting on it, with ``standardwebhooks``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import standardwebhooks
from standardwebhooks.webhooks import EmptyWebhookSecretError

from action_links_client._errors import WebhookVerificationError


class Headers(Protocol):
    """Any request headers with ``items()``: a dict, Starlette's, Werkzeug's, httpx's."""

    def items(self) -> Iterable[tuple[str, str]]: ...


def verify_webhook(
    secret: str | Sequence[str], body: bytes | str, headers: Headers
) -> dict[str, Any]:
    """The event of a webhook whose Standard Webhooks signature checks out, else raises.

    ``secret`` is the client's ``whsec_…`` webhook secret, or several while
    one is being rotated (the message must verify with one of them);
    ``body`` the raw request body, exactly as received (parse nothing before
    this); ``headers`` the request's headers (``webhook-id``,
    ``webhook-timestamp``, ``webhook-signature``). The timestamp must be
    within 5 minutes of now.

    Raises ``WebhookVerificationError`` for a missing header, a bad or stale
    signature, or a signed body that is not a JSON object; ``ValueError`` for
    a secret that is not a webhook secret at all (a configuration mistake).
    """
    hooks = [_webhook(one) for one in ([secret] if isinstance(secret, str) else secret)]
    if not hooks:
        raise ValueError("no webhook secret given")
    plain = dict(headers.items())
    refusal: Exception | None = None
    for hook in hooks:
        try:
            event = hook.verify(body, plain)
        except (standardwebhooks.WebhookVerificationError, ValueError) as exc:
            # ValueError: a malformed signature, timestamp, encoding or JSON body.
            refusal = exc
            continue
        if not isinstance(event, dict):
            raise WebhookVerificationError("the signed body is not an event object")
        return event
    raise WebhookVerificationError(str(refusal) or type(refusal).__name__) from refusal


def _webhook(secret: str) -> standardwebhooks.Webhook:
    try:
        return standardwebhooks.Webhook(secret)
    except (ValueError, EmptyWebhookSecretError) as exc:
        raise ValueError("not a webhook secret (whsec_…)") from exc
