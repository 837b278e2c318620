"""People-facing pages in the person's language: negotiation, headers, every door.

In a real browser: ``test_browser.py``. The catalogs themselves:
``test_pages_catalogs.py``; an operator's ``PAGES_DIR``: ``test_pages_dir.py``.
In-process tests share one app for the module, each with a new client
(``tests.support.shared_app``).
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from babel import negotiate_locale
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from service.config import Settings
from service.pages import PAGES, Pages, one_click_done, rate_limited_page
from service.pages.catalogs import translations
from service.pages.language import (
    CACHED_HEADERS,
    LANGUAGES,
    MAX_HEADER_CHARS,
    _first_available,
    _negotiate,
    language_of,
    language_ranges,
    negotiate,
)
from service.state import AppState
from tests.conftest import Tenant, link_path, make_tenant
from tests.support.served import serving
from tests.support.shared_app import FIXTURES, new_client_id, on_the_modules_loop
from tests.test_confirm import HOSTILE, assert_people_page, confirm_link
from tests.test_redeem import sign

backend, database_url, settings, app, state, http, shop = FIXTURES  # the module's app

Headers = dict[str, str]
GARBAGE_10KB = "\x7f;q=,<script>é" * 640


def title_of(html: str) -> str:
    match = re.search(r"<title>(.*?)</title>", html, re.S)
    assert match is not None, html
    return match.group(1)


def in_language(language: str) -> Headers:
    return {"Accept-Language": language}


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("", "en"),
        ("de", "de"),
        ("DE", "de"),
        ("de-CH, en;q=0.5", "de"),
        ("es-419", "es"),
        ("fr-CA;q=0.8, en;q=0.7", "fr"),
        ("en;q=0.1, fr;q=0.9", "fr"),
        ("en-US,en;q=0.9,de;q=0.8", "en"),
        (" de ; q = 0.9 , fr;q=0.8", "de"),
        ("es;q=0.3, fr;q=0.3", "es"),  # a tie keeps the header's order
        ("zh, ja;q=0.9, fr;q=0.1", "fr"),  # the first range we answer, however low
        ("zh, ja", "en"),
        ("*", "en"),
        ("fr;q=0, *", "en"),  # "*" is every language not named: English first
        ("en;q=0, *", "de"),
        ("de;q=0.5, *;q=0.8", "en"),
        ("de;q=0", "en"),  # nothing acceptable: English anyway
        ("de;q=abc, es", "es"),  # a malformed quality drops that range only
        ("fr;q=1.5, es;q=0.2", "es"),
        ("fr;level=1, es", "es"),
        ("x-klingon, d€, es", "es"),
        ("q=1;de", "en"),
    ],
)
def test_negotiation_follows_quality_values(header: str | None, language: str) -> None:
    assert negotiate(header) == language


# Language tags as Accept-Language sends them: ours, their regions, others, any case.
_TAG = st.builds(
    lambda primary, region: primary + region,
    st.sampled_from(["en", "de", "fr", "es", "zh", "ja", "nb", "no", "pt", "x"]).map(
        lambda tag: tag.upper() if len(tag) % 2 else tag
    ),
    st.sampled_from(["", "-CH", "-us", "-419", "-Latn-RS", "_DE"]),
)


@given(
    preferred=st.lists(_TAG, max_size=6),
    available=st.lists(st.sampled_from(LANGUAGES), unique=True),
)
def test_the_language_match_is_babels(preferred: list[str], available: list[str]) -> None:
    """``_first_available`` stands in for Babel's ``negotiate_locale`` (not imported by
    the service): the same answer for every list of tags and of our languages."""
    assert _first_available(preferred, available) == negotiate_locale(preferred, available, sep="-")


def test_ranges_are_read_best_first() -> None:
    assert language_ranges("en;q=0.5, de, fr;q=0.7, *;q=0") == [
        ("de", 1.0),
        ("fr", 0.7),
        ("en", 0.5),
        ("*", 0.0),
    ]


def test_garbage_of_10_kb_is_english_cheap_and_bounded() -> None:
    assert negotiate(GARBAGE_10KB) == "en"
    assert negotiate("fr, " + GARBAGE_10KB) == "fr"
    # Only whole ranges within the first MAX_HEADER_CHARS count.
    assert negotiate("x" * (MAX_HEADER_CHARS - 4) + ",de-CH") == "en"
    assert negotiate("a," * 100 + "es") == "en"  # past the ranges read
    _negotiate.cache_clear()
    started = time.perf_counter()
    for number in range(2 * CACHED_HEADERS):
        assert negotiate(f"{number}," + ",".join(["zz-abcdefgh;q=0.5"] * 600)) == "en"
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed  # about 40 ms on one core: each is parsed from 512 chars
    assert _negotiate.cache_info().currsize == CACHED_HEADERS


def test_several_header_fields_are_one_list() -> None:
    headers = [(b"accept-language", b"zh"), (b"x-other", b"de"), (b"accept-language", b"es")]
    assert language_of(headers) == "es"
    assert language_of([(b"accept-language", GARBAGE_10KB.encode("utf-8"))]) == "en"
    assert language_of([]) == "en"


async def test_pages_answer_in_the_requested_language(http: httpx.AsyncClient) -> None:
    for header, language in (("de-AT, en;q=0.5", "de"), ("fr", "fr"), ("es", "es"), ("", "en")):
        response = await http.get("/r/garbage", headers=in_language(header))
        html = assert_people_page(response, 400)
        assert response.headers["content-language"] == language
        assert response.headers["vary"] == "Accept-Language"
        assert f'<html lang="{language}">' in html
        title = translations(language).gettext(PAGES["invalid"].title)
        assert title_of(html) == str(title).replace("'", "&#39;")
    german = (await http.get("/r/garbage", headers=in_language("de"))).text
    assert "Dieser Link ist ungültig" in german


async def test_every_door_to_a_page_speaks_the_language(http: httpx.AsyncClient) -> None:
    """The GET fast path, the POST and HEAD routes, the error handlers, the NUL guard."""
    german = in_language("de")
    answers = {
        "GET (fast path)": await http.get("/r/garbage", headers=german),
        "POST (route)": await http.post("/r/garbage", headers=german),
        "HEAD (route)": await http.head("/r/garbage", headers=german),
        "NUL in the URL": await http.get("/r/a%00b", headers=german),
        "405": await http.request("PUT", "/r/garbage", headers=german),
        "404": await http.get("/r/a%0Ab", headers=german),
    }
    for door, response in answers.items():
        assert response.headers["content-language"] == "de", door
        assert response.headers["vary"] == "Accept-Language", door
        if door != "HEAD (route)":
            assert '<html lang="de">' in response.text, door
    assert answers["405"].status_code == 405
    assert "Dieser Link kann so nicht verwendet werden" in answers["405"].text
    assert answers["404"].status_code == 404
    assert "Seite nicht gefunden" in answers["404"].text


async def test_a_10_kb_garbage_header_gets_the_english_page(http: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    garbage = {b"Accept-Language": GARBAGE_10KB.encode("utf-8")}
    response = await http.get("/r/garbage", headers=garbage)
    assert time.perf_counter() - started < 2.0
    html = assert_people_page(response, 400)
    assert response.headers["content-language"] == "en"
    assert title_of(html) == "This link is not valid"


@pytest.mark.parametrize(
    ("language", "ask_for_a_new_link"),
    [
        ("en", "Ask the sender for a new link."),
        ("de", "Bitten Sie den Absender um einen neuen Link."),
        ("fr", "Demandez un nouveau lien à l&#39;expéditeur."),
        ("es", "Pida un nuevo enlace al remitente."),
    ],
)
async def test_an_expired_link_without_failure_url_says_ask_for_a_new_one(
    shop: Tenant,
    http: httpx.AsyncClient,
    admin_headers: Headers,
    state: AppState,
    language: str,
    ask_for_a_new_link: str,
) -> None:
    await shop.put_action("activate", admin_headers, failure_url=None)
    token = sign(state, client_id=shop.id, expires_at=int(time.time()) - 5)
    response = await http.get(f"/r/{token}", headers=in_language(language))
    html = assert_people_page(response, 410)
    assert ask_for_a_new_link in html
    assert response.headers["content-language"] == language


async def test_the_confirm_page_in_french_still_escapes_everything(
    http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    tenant = await make_tenant(http, admin_headers, new_client_id("evil"), name=HOSTILE)
    await tenant.put_action("activate", admin_headers, confirm="auto", label=HOSTILE)
    link = await tenant.mint(subject=HOSTILE)
    for method in ("GET", "HEAD"):
        response = await http.request(method, link_path(link), headers=in_language("fr-FR"))
        assert response.status_code == 200
        assert response.headers["content-language"] == "fr"
    html = assert_people_page(await http.get(link_path(link), headers=in_language("fr")), 200)
    assert ">Confirmer</button>" in html
    assert "De <strong>&lt;script&gt;" in html
    assert "pour &lt;script&gt;" in html
    assert "<script>alert" not in html
    assert "<img" not in html
    assert html.count("<script") == 1  # only the page's own
    assert '"Poursuite en cours\\u2026"' in html  # the script's words, as a JSON string


async def test_the_refused_confirmation_in_spanish(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    link = await confirm_link(shop, admin_headers)
    response = await http.post(link_path(link), data={"confirm": "x"}, headers=in_language("es"))
    html = assert_people_page(response, 403)
    assert "No se ha hecho nada" in html
    assert ">Confirmar</button>" in html


async def test_the_demo_pages_in_the_visitors_language(settings: Settings) -> None:
    async with serving(settings.model_copy(update={"dev": True})) as http:
        spanish = in_language("es-MX, en;q=0.5")
        done = await http.get("/demo/done?link_id=l1&redemption_id=r1", headers=spanish)
        assert title_of(assert_people_page(done, 200)) == "Enlace canjeado"
        failed = await http.get("/demo/failed?error=<b>expired&link_id=l1", headers=spanish)
        assert title_of(assert_people_page(failed, 200)) == "Enlace rechazado: &lt;b&gt;expired"
        assert failed.headers["content-language"] == "es"


def scope_of(app: FastAPI, language: str) -> dict[str, Any]:
    return {"type": "http", "app": app, "headers": [(b"accept-language", language.encode())]}


def test_the_rate_limited_page_for_others_to_use(app: FastAPI) -> None:
    response = rate_limited_page(scope_of(app, "de"), 30)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert response.headers["content-language"] == "de"
    assert "Zu viele Versuche" in bytes(response.body).decode()


@pytest.mark.parametrize(
    ("language", "words"),
    [("en", "unsubscribed"), ("de", "abgemeldet"), ("fr", "désinscription"), ("es", "suscripción")],
)
def test_the_one_click_answer_is_short_plain_text(app: FastAPI, language: str, words: str) -> None:
    response = one_click_done(scope_of(app, language))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-language"] == language
    assert response.headers["vary"] == "Accept-Language"
    assert response.headers["cache-control"] == "no-store"
    body = bytes(response.body).decode()
    assert words in body
    assert len(body) < 200


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", sorted(PAGES))
def test_every_page_in_every_language(kind: str, language: str) -> None:
    response = Pages().error(kind, language)
    html = bytes(response.body).decode()
    assert response.headers["content-language"] == language
    assert f'<html lang="{language}">' in html
    english = PAGES[kind]
    translated = english.translated(translations(language))
    if language != "en":
        assert translated.title != english.title
        assert translated.message != english.message
    assert f"<h1>{translated.title}</h1>".replace("'", "&#39;") in html


on_the_modules_loop(globals())
