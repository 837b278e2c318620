"""The HTML pages people see. One autoescaped template, one entry per kind of page.

Pages are self-contained (no external resources) and carry a strict
Content-Security-Policy whose nonce allows only their own inline style.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

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
}


def content_security_policy(nonce: str) -> str:
    return (
        "default-src 'none'; "
        f"style-src 'nonce-{nonce}'; "
        f"script-src 'nonce-{nonce}'; "
        "img-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def page_headers(nonce: str) -> dict[str, str]:
    return {**LINK_HEADERS, "Content-Security-Policy": content_security_policy(nonce)}


def html_page(
    template: str, status: int, headers: dict[str, str] | None = None, **context: object
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    body = _env.get_template(template).render(nonce=nonce, **context)
    all_headers = page_headers(nonce)
    all_headers.update(headers or {})
    return HTMLResponse(body, status_code=status, headers=all_headers)


def error_page(kind: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    text = PAGES[kind]
    return html_page("page.html", text.status, headers, page=text, kind=kind)
