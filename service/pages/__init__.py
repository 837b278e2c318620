"""The HTML pages people see: autoescaped templates, one per kind, on a shared base.

``page.html`` renders the outcomes in ``PAGES`` (invalid, expired, used, …);
``confirm.html`` is the confirmation page of ``confirm: "page"`` and
``"auto"`` actions. Every template extends ``base.html`` and every value
from a token or a client's configuration is escaped by Jinja2's autoescape.

Pages are self-contained (no external resources) and carry a strict
Content-Security-Policy: nothing loads but the page's own inline style (and,
on an ``auto`` confirmation page, its own inline script), allowed by a nonce
made for that one response. ``form-action`` is ``'none'`` on pages without a
form. On a confirmation page it also lists the origins its form's POST may
redirect to, because Chromium applies ``form-action`` to every redirect that
follows a form submission: ``'self'`` alone would block the 303 to the
client's success URL.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from service.confirm import Confirmation

LINK_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)


@dataclass(frozen=True, slots=True)
class PageText:
    status: int
    title: str
    message: str
    next_step: str


PAGES: dict[str, PageText] = {
    "invalid": PageText(
        400,
        "This link is not valid",
        "The link is incomplete or was changed after it was sent.",
        "Copy the whole link from the message you received, or ask the sender for a new one.",
    ),
    "expired": PageText(
        410,
        "This link has expired",
        "The link was only valid for a limited time, and that time is over.",
        "Ask the sender for a new link.",
    ),
    "used": PageText(
        410,
        "This link was already used",
        "The link has already been used as many times as it allows, so it did nothing now.",
        "If you used it a moment ago, you are done. Otherwise ask the sender for a new link.",
    ),
    "revoked": PageText(
        410,
        "This link was cancelled",
        "The sender cancelled this link, so it no longer works.",
        "Ask the sender for a new link if you still need one.",
    ),
    "disabled": PageText(
        410,
        "This link no longer works",
        "The service that sent this link has switched it off.",
        "Contact the sender if you still need what the link was for.",
    ),
    "rejected": PageText(
        409,
        "This request was declined",
        "The sender's service declined this request. Nothing was changed.",
        "Contact the sender if you think this is a mistake.",
    ),
    "unavailable": PageText(
        503,
        "Please try again in a moment",
        "The service could not complete your request right now. Nothing was changed.",
        "Wait a minute, then open the link again.",
    ),
    "not_found": PageText(
        404,
        "Page not found",
        "There is nothing at this address.",
        "Check the link you followed.",
    ),
    "method_not_allowed": PageText(
        405,
        "This link cannot be used this way",
        "The request used a method that links do not answer. Nothing was changed.",
        "Open the link in a web browser.",
    ),
}


REFUSED_CONFIRMATION_STATUS = 403
"""A POST to a confirm link without a valid nonce: refused, and the page offered again."""

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


def html_page(
    template: str,
    status: int,
    headers: dict[str, str] | None = None,
    *,
    form_targets: Iterable[str] | None = None,
    script: bool = False,
    **context: object,
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    body = _env.get_template(template).render(nonce=nonce, **context)
    all_headers = page_headers(nonce, form_targets=form_targets, script=script)
    all_headers.update(headers or {})
    return HTMLResponse(body, status_code=status, headers=all_headers)


def error_page(kind: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    text = PAGES[kind]
    return html_page("page.html", text.status, headers, page=text, kind=kind)


def confirm_page(confirmation: Confirmation) -> HTMLResponse:
    """The confirmation page: who sent the link, what it does, one button."""
    auto = confirmation.auto and not confirmation.refused
    return html_page(
        "confirm.html",
        REFUSED_CONFIRMATION_STATUS if confirmation.refused else 200,
        form_targets=confirmation.targets,
        script=auto,
        kind="confirm",
        what=confirmation.what,
        sender=confirmation.sender,
        subject=confirmation.link.subject,
        confirm_nonce=confirmation.nonce,
        refused=confirmation.refused,
        auto=auto,
        button="Confirm",
    )
