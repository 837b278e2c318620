"""What the pages say, in English: the messages the catalogs translate.

Each text is marked with ``N_`` so that ``pybabel extract`` finds it (see
README, "Translations"); it is translated when a page is rendered, in the
language of the person who asked. The templates hold the rest of the words.
"""

from __future__ import annotations

from dataclasses import dataclass
from gettext import NullTranslations


def N_(message: str) -> str:
    """Marks ``message`` for extraction; it is translated where it is shown."""
    return message


@dataclass(frozen=True, slots=True)
class PageText:
    status: int
    title: str
    message: str
    next_step: str

    def translated(self, translations: NullTranslations) -> PageText:
        gettext = translations.gettext
        return PageText(
            self.status, gettext(self.title), gettext(self.message), gettext(self.next_step)
        )


PAGES: dict[str, PageText] = {
    "invalid": PageText(
        400,
        N_("This link is not valid"),
        N_("The link is incomplete or was changed after it was sent."),
        N_("Copy the whole link from the message you received, or ask the sender for a new one."),
    ),
    "expired": PageText(
        410,
        N_("This link has expired"),
        N_("The link was only valid for a limited time, and that time is over."),
        N_("Ask the sender for a new link."),
    ),
    "used": PageText(
        410,
        N_("This link was already used"),
        N_("The link has already been used as many times as it allows, so it did nothing now."),
        N_("If you used it a moment ago, you are done. Otherwise ask the sender for a new link."),
    ),
    "revoked": PageText(
        410,
        N_("This link was cancelled"),
        N_("The sender cancelled this link, so it no longer works."),
        N_("Ask the sender for a new link if you still need one."),
    ),
    "disabled": PageText(
        410,
        N_("This link no longer works"),
        N_("The service that sent this link has switched it off."),
        N_("Contact the sender if you still need what the link was for."),
    ),
    "rejected": PageText(
        409,
        N_("This request was declined"),
        N_("The sender's service declined this request. Nothing was changed."),
        N_("Contact the sender if you think this is a mistake."),
    ),
    "unavailable": PageText(
        503,
        N_("Please try again in a moment"),
        N_("The service could not complete your request right now. Nothing was changed."),
        N_("Wait a minute, then open the link again."),
    ),
    "rate_limited": PageText(
        429,
        N_("Too many attempts"),
        N_("There were too many attempts from your network in a short time. Nothing was changed."),
        N_("Wait a few minutes, then try again."),
    ),
    "not_found": PageText(
        404,
        N_("Page not found"),
        N_("There is nothing at this address."),
        N_("Check the link you followed."),
    ),
    "method_not_allowed": PageText(
        405,
        N_("This link cannot be used this way"),
        N_("The request used a method that links do not answer. Nothing was changed."),
        N_("Open the link in a web browser."),
    ),
    # The protocol's own refusals (``api.problem_json.refusal``), which close the connection.
    "too_large": PageText(
        413,
        N_("This request is too large"),
        N_("The request sent more data than a link accepts. Nothing was changed."),
        N_("Open the link in a web browser."),
    ),
    "uri_too_long": PageText(
        414,
        N_("This link is too long"),
        N_("The address is longer than any link we send, so it was not opened."),
        N_("Copy the whole link from the message you received, or ask the sender for a new one."),
    ),
    "header_too_large": PageText(
        431,
        N_("This request is too large"),
        N_("Your browser sent more header data than a link accepts. Nothing was changed."),
        N_("Clear this site's cookies in your browser, then open the link again."),
    ),
}

ONE_CLICK_DONE = N_("You have been unsubscribed. There is nothing more to do.")
"""The plain-text answer to a mail provider's one-click unsubscribe POST (RFC 8058)."""
