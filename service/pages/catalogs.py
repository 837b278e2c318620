"""The compiled gettext catalogs (``locales/<language>/LC_MESSAGES/messages.mo``).

English is the language the messages are written in, so it needs no
catalog. The ``.mo`` files are compiled from the ``.po`` sources with
``pybabel compile`` and committed; a test fails when they differ.
"""

from __future__ import annotations

from functools import cache
from gettext import NullTranslations
from pathlib import Path

from babel.support import Translations

from service.pages.language import DEFAULT_LANGUAGE

LOCALES = Path(__file__).parent / "locales"
DOMAIN = "messages"


@cache
def translations(language: str) -> NullTranslations:
    """The catalog of ``language`` (loaded once per process); English passes text through."""
    if language == DEFAULT_LANGUAGE:
        return NullTranslations()
    return Translations.load(LOCALES, [language], DOMAIN)
