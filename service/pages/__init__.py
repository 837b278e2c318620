"""The pages people see, in their language: autoescaped templates on a shared base.

``page.html`` renders the outcomes in ``PAGES`` (invalid, expired, used, …);
``confirm.html`` is the confirmation page of ``confirm: "page"`` and
``"auto"`` actions; ``demo.html`` the ``serve --dev`` landing pages. Every
value from a token or a client's configuration is escaped by Jinja2's
autoescape.

Each answer is worded in the language ``Accept-Language`` asks for
(``service.pages.language``) from the gettext catalogs under ``locales/``,
says so in ``Content-Language`` and ``Vary: Accept-Language``, and carries
the security headers of ``service.pages.headers``, set here and never by a
template. The templates may be replaced from ``PAGES_DIR``
(``service.pages.render``).

Routers and middleware call the functions that take the request's ASGI
``scope``: they find the app's ``Pages`` (``app.state.pages``, built by
``create_app``) and the request's language there.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import Scope

from service.pages.catalogs import translations
from service.pages.headers import LINK_HEADERS, csp_source, language_headers, page_headers
from service.pages.language import language_of
from service.pages.render import Renderer
from service.pages.texts import ONE_CLICK_DONE, PAGES, PageText

if TYPE_CHECKING:  # only named here: importing it loads the database layer, and the
    # HTTP protocol (service.http_limits) renders pages before any app is loaded
    from service.confirm import Confirmation

__all__ = [
    "LINK_HEADERS",
    "PAGES",
    "REFUSED_CONFIRMATION_STATUS",
    "PageText",
    "Pages",
    "confirm_page",
    "csp_source",
    "error_page",
    "html_page",
    "one_click_done",
    "page_headers",
    "pages_of",
    "rate_limited_page",
]

REFUSED_CONFIRMATION_STATUS = 403
"""A POST to a confirm link without a valid nonce: refused, and the page offered again."""


class Pages:
    """The people-facing answers of one app, from its templates (built-in or ``PAGES_DIR``)."""

    def __init__(self, pages_dir: Path | None = None) -> None:
        self.renderer = Renderer(pages_dir)

    def html(
        self,
        template: str,
        status: int,
        language: str,
        context: Mapping[str, object],
        headers: Mapping[str, str] | None = None,
        *,
        form_targets: Iterable[str] | None = None,
        script: bool = False,
    ) -> HTMLResponse:
        """``template`` rendered in ``language`` with ``context``, and every header a page has."""
        nonce = secrets.token_urlsafe(16)
        context = {**context, "language": language, "nonce": nonce}
        body = self.renderer.render(template, language, context)
        all_headers = page_headers(nonce, form_targets=form_targets, script=script)
        all_headers.update(language_headers(language))
        all_headers.update(headers or {})
        return HTMLResponse(body, status_code=status, headers=all_headers)

    def error(
        self, kind: str, language: str, headers: Mapping[str, str] | None = None
    ) -> HTMLResponse:
        text = PAGES[kind].translated(translations(language))
        context = {"page": text, "kind": kind}
        return self.html("page.html", text.status, language, context, headers)

    def confirm(self, confirmation: Confirmation, language: str) -> HTMLResponse:
        """The confirmation page: who sent the link, what it does, one button."""
        auto = confirmation.auto and not confirmation.refused
        return self.html(
            "confirm.html",
            REFUSED_CONFIRMATION_STATUS if confirmation.refused else 200,
            language,
            {
                "kind": "confirm",
                "what": confirmation.what,
                "sender": confirmation.sender,
                "subject": confirmation.link.subject,
                "confirm_nonce": confirmation.nonce,
                "refused": confirmation.refused,
                "auto": auto,
            },
            form_targets=confirmation.targets,
            script=auto,
        )


def pages_of(scope: Scope) -> Pages:
    pages: Pages = scope["app"].state.pages
    return pages


def error_page(scope: Scope, kind: str, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """The page ``kind`` of ``PAGES``, for the person who sent this request."""
    return pages_of(scope).error(kind, language_of(scope["headers"]), headers)


def confirm_page(scope: Scope, confirmation: Confirmation) -> HTMLResponse:
    return pages_of(scope).confirm(confirmation, language_of(scope["headers"]))


def rate_limited_page(scope: Scope, retry_after: int) -> HTMLResponse:
    """The ``429`` page under ``/r/``: too many attempts, come back in ``retry_after`` s."""
    return error_page(scope, "rate_limited", {"Retry-After": str(retry_after)})


def html_page(scope: Scope, template: str, status: int, **context: object) -> HTMLResponse:
    """Any other template (the demo pages) as a page for this request."""
    return pages_of(scope).html(template, status, language_of(scope["headers"]), context)


def one_click_done(scope: Scope) -> Response:
    """The ``200`` plain text of a one-click unsubscribe (RFC 8058) that took effect."""
    language = language_of(scope["headers"])
    text = translations(language).gettext(ONE_CLICK_DONE)
    return PlainTextResponse(text + "\n", headers={**LINK_HEADERS, **language_headers(language)})
