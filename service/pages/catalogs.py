"""The compiled gettext catalogs (``locales/<language>/LC_MESSAGES/messages.mo``).

English is the language the messages are written in, so it needs no
catalog. The ``.mo`` files are compiled from the ``.po`` sources with
``pybabel compile`` and committed; a test fails when they differ. Read with
the standard library's ``gettext``.
"""

from __future__ import annotations

from functools import cache
from gettext import NullTranslations, translation
from pathlib import Path

from service.pages.language import DEFAULT_LANGUAGE

LOCALES = Path(__file__).parent / "locales"
DOMAIN = "messages"


@cache
def translations(language: str) -> NullTranslations:
    """The catalog of ``language`` (loaded once per process); English passes text through."""
    if language == DEFAULT_LANGUAGE:
        return NullTranslations()
    # The standard library's reader, not Babel's (its ``Translations`` imports its date
    # and number formatting: ~0.7 MB in every worker); the same catalog either way.
    return translation(DOMAIN, LOCALES, [language], fallback=True)
