"""The gettext catalogs: extracted, translated and compiled from what the sources say.

The ``.mo`` files are committed (the package ships them); these tests fail
when someone changes a message and forgets a step of README, "Translations":
``pybabel extract`` (the template misses a message), ``update`` plus a
translation (a catalog misses or leaves one fuzzy), ``compile`` (a ``.mo``
differs from its ``.po``).
"""

from __future__ import annotations

import io
from gettext import GNUTranslations
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from service.pages.catalogs import DOMAIN, LOCALES, translations
from service.pages.language import DEFAULT_LANGUAGE, LANGUAGES
from tests.support.processes import REPO_ROOT

TRANSLATED = [language for language in LANGUAGES if language != DEFAULT_LANGUAGE]
TEMPLATE = LOCALES / f"{DOMAIN}.pot"


def source_of(language: str) -> Path:
    return LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def read(path: Path, language: str | None = None) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=language)


def test_the_template_holds_every_message_of_the_sources() -> None:
    with (REPO_ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)  # type: ignore[no-untyped-call]  # untyped upstream
    extracted = {
        message for _, _, message, _, _ in extract_from_dir(REPO_ROOT, method_map, options_map)
    }
    assert extracted, "nothing extracted: is babel.cfg right?"
    assert {message.id for message in read(TEMPLATE) if message.id} == extracted


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated(language: str) -> None:
    expected = {message.id for message in read(TEMPLATE) if message.id}
    catalog = read(source_of(language), language)
    assert not catalog.fuzzy
    translated = {message.id for message in catalog if message.id and message.string}
    assert translated == expected
    assert not [message.id for message in catalog if message.id and message.fuzzy]
    # Placeholders (%(sender)s, …) and such: Babel's own checks.
    assert not [(message.id, errors) for message, errors in catalog.check()]


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_compiled_catalog_is_its_source_compiled(language: str) -> None:
    compiled = io.BytesIO()
    write_mo(compiled, read(source_of(language), language))
    shipped = source_of(language).with_suffix(".mo")
    assert shipped.read_bytes() == compiled.getvalue(), (
        f"{shipped.name} of {language} is stale: run pybabel compile -d service/pages/locales"
    )


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_service_loads_each_catalog(language: str) -> None:
    loaded = translations(language)
    assert isinstance(loaded, GNUTranslations)
    assert loaded.gettext("Confirm") != "Confirm"
