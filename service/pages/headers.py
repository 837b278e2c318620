"""The headers of every answer under ``/r/`` and of every page, set by code alone.

Pages are self-contained (no external resources) and carry a strict
Content-Security-Policy: nothing loads but the page's own inline style (and,
on an ``auto`` confirmation page, its own inline script), allowed by a nonce
made for that one response. ``form-action`` is ``'none'`` on pages without a
form. On a confirmation page it also lists the origins its form's POST may
redirect to, because Chromium applies ``form-action`` to every redirect that
follows a form submission: ``'self'`` alone would block the 303 to the
client's success URL.

Templates, an operator's included, only ever produce a body: what is here
holds whatever they say.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

LINK_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}

_PLAIN_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")


def csp_source(url: str) -> str | None:
    """The CSP source expression for ``url``'s origin (None for a non-http(s) URL).

    A host that cannot be written safely into the header (anything but plain
    ASCII names and IP addresses) falls back to the scheme alone.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return None
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if not _PLAIN_HOST.fullmatch(host):
        return f"{scheme}:"
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def content_security_policy(
    nonce: str, *, form_targets: Iterable[str] | None = None, script: bool = False
) -> str:
    """The policy of one page.

    ``form_targets`` is None for a page without a form, else the URLs its
    form's POST may be redirected to.
    """
    if form_targets is None:
        form_action = "'none'"
    else:
        sources = dict.fromkeys(s for s in map(csp_source, form_targets) if s is not None)
        form_action = " ".join(["'self'", *sources])
    directives = [
        "default-src 'none'",
        f"style-src 'nonce-{nonce}'",
        f"script-src 'nonce-{nonce}'" if script else "script-src 'none'",
        "img-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        f"form-action {form_action}",
    ]
    return "; ".join(directives)


def page_headers(
    nonce: str, *, form_targets: Iterable[str] | None = None, script: bool = False
) -> dict[str, str]:
    policy = content_security_policy(nonce, form_targets=form_targets, script=script)
    return {**LINK_HEADERS, "Content-Security-Policy": policy}


def language_headers(language: str) -> dict[str, str]:
    """What an answer worded for the request's ``Accept-Language`` says about that."""
    return {"Content-Language": language, "Vary": "Accept-Language"}
