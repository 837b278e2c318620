"""The people-facing pages in a real browser: Debian's Chromium, driven by Playwright.

The service runs as a real process against the test database (one for the
module: each test empties the database and sets its client up again; one
Chromium for the module too, launched while the service starts, with one tab
per device and locale, shared by the tests: ``Tabs`` says why); the client's
landing pages are another server on another port, so the form's POST is
redirected across origins exactly as it is in production (and Chromium's
``form-action`` enforcement on that redirect is exercised).

What needs a browser is checked here, once per page: each page is opened by a
browser (a desktop's or a phone's) whose locale asks for one of the four languages
(each language is asked for), and renders under its own CSP with its own style.
The pages a link leads to come from the running service; every page (including
those only a failure in production shows: rejected, unavailable, too many
attempts, and the demo pages) as the service renders it, handed to Chromium with
its headers through Playwright's request interception. Every page in every
language, by its HTML: the in-process ``test_every_page_is_worded_in_every_language``
below, and ``test_pages_language.py``. An operator's ``PAGES_DIR`` is used by an
app made with one (in-process, behind the same interception).

Screenshots are taken once per device (desktop, phone; the no-script phone
page): nothing compares them, they prove Chromium paints the page.

Without ``/usr/bin/chromium`` the tests skip locally and fail under CI=true;
``.ci/run`` installs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright

from service.config import Settings
from service.main import create_app
from service.pages import PAGES, Pages
from service.pages.catalogs import translations
from service.pages.language import language_of
from service.tokens import LinkClaims, TokenCodec
from tests.conftest import ADMIN_TOKEN, SECRET
from tests.support.landing import LandingServer
from tests.support.links import random_link_id
from tests.support.processes import ServiceProcess, running_service
from tests.test_redeem import count

# The module's Chromium lives on the module's event loop, and so do its tests.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCANNER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/120.0.0.0 Safari/537.36 Edg/120.0",  # Safe Links detonation looks like a browser
    "Microsoft Office Existence Discovery",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17126; Pro)",
    "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
    "Mimecast-URL-Protect/1.0",
    "Barracuda Sentinel (EE)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "WhatsApp/2.23.20.0",
    "TelegramBot (like TwitterBot)",
    "Mozilla/5.0 " + "<script>alert(1)</script>" * 410,  # 10 KB and hostile
]


LOCALES = {"en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-ES"}
EXPIRED_TITLES = {
    "en": "This link has expired",
    "de": "Dieser Link ist abgelaufen",
    "fr": "Ce lien a expiré",
    "es": "Este enlace ha caducado",
}
# The browser each language is asked for by (a phone or a desktop, in the locale).
IN: dict[str, dict[str, Any]] = {
    "en": {**DESKTOP, "locale": LOCALES["en"]},
    "de": {**PHONE, "locale": LOCALES["de"]},
    "fr": {**DESKTOP, "locale": LOCALES["fr"]},
    "es": {**PHONE, "locale": LOCALES["es"]},
}
CONFIRM_BUTTONS = {"en": "Confirm", "de": "Bestätigen", "fr": "Confirmer", "es": "Confirmar"}
RENDERED_ORIGIN = "http://pages.test"  # answered by the route handler, never by a network


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing, and CI must not skip the browser tests")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); .ci/run installs it")


@pytest.fixture(scope="module")
def landing() -> Iterator[LandingServer]:
    server = LandingServer().start()
    yield server
    server.close()


@dataclass
class Started:
    """The module's service process and its Chromium."""

    service: ServiceProcess
    browser: Browser


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def started(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Started]:
    """One process for the module, on the session's database (``database_url`` empties
    it before each test, so each test's ``shop`` starts from nothing), and one Chromium,
    launched while the process starts (its tabs: ``tabs``)."""
    require_chromium()
    log_dir = tmp_path_factory.mktemp("browser")
    with ExitStack() as stack:
        starting = asyncio.create_task(
            asyncio.to_thread(
                stack.enter_context, running_service(service_env(postgres_url), log_dir)
            )
        )
        try:
            async with launched() as chromium:
                yield Started(await starting, chromium)
        finally:
            await asyncio.gather(starting, return_exceptions=True)  # then the stack stops it


@pytest.fixture(scope="module")
def service(started: Started) -> ServiceProcess:
    return started.service


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEYS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_POOL_SIZE": "5",
        **extra,
    }


@asynccontextmanager
async def launched() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, chromium_sandbox=False
        )
        yield chromium
        await chromium.close()


@pytest.fixture(scope="module")
def browser(started: Started) -> Browser:
    return started.browser


@dataclass
class Shop:
    """The client ``shop`` of a running service, landing on ``landing``."""

    http: httpx.AsyncClient
    base_url: str
    landing: LandingServer
    key: str = ""

    async def setup(self) -> Shop:
        body = {"id": "shop", "name": "Example Shop", "allowed_redirects": [self.landing.origin]}
        created = await self.http.post("/v1/admin/clients", json=body, headers=ADMIN)
        assert created.status_code == 201, created.text
        key = await self.http.post("/v1/admin/clients/shop/keys", headers=ADMIN)
        self.key = key.json()["key"]
        return self

    async def action(self, name: str, **fields: Any) -> None:
        body = {
            "success_url": f"{self.landing.origin}/welcome",
            "failure_url": f"{self.landing.origin}/oops",
            **fields,
        }
        put = await self.http.put(
            f"/v1/admin/clients/shop/actions/{name}", json=body, headers=ADMIN
        )
        assert put.status_code == 200, put.text

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def mint(self, action: str) -> tuple[str, str]:
        """A new link's URL on the running service, and its id."""
        minted = await self.http.post("/v1/links", json={"action": action}, headers=self.headers)
        assert minted.status_code == 201, minted.text
        return f"{self.base_url}/r/{minted.json()['token']}", minted.json()["id"]

    async def revoke(self, link_id: str) -> None:
        revoked = await self.http.delete(f"/v1/links/{link_id}", headers=self.headers)
        assert revoked.status_code == 204, revoked.text


@pytest_asyncio.fixture(loop_scope="module")
async def shop(
    service: ServiceProcess, landing: LandingServer, database_url: str
) -> AsyncIterator[Shop]:
    """Client ``shop`` of the module's service, in a database emptied for this test."""
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        yield await Shop(http, service.base_url, landing).setup()


@dataclass
class Tab:
    """A page in a fresh profile (no cookies), with what its console said."""

    context: BrowserContext
    page: Page
    console: list[str]

    @classmethod
    async def open(cls, browser: Browser, device: dict[str, Any]) -> Tab:
        context = await browser.new_context(**device)
        page = await context.new_page()
        tab = cls(context, page, [])
        page.on("console", lambda message: tab.console.append(message.text))
        return tab

    def csp_violations(self) -> list[str]:
        return [line for line in self.console if "Content Security Policy" in line]

    async def close(self) -> None:
        await self.context.close()


class Tabs:
    """The module's tabs, one per device and locale, each opened once (a context costs
    Chromium a quarter to half a second here) and handed to every test that asks for it,
    with an empty console and no routes. What a fresh profile would isolate, the pages
    leave nothing of: they set no cookie, store nothing and are never cached
    (``no-store``; the scanners' check asserts both)."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.opened: dict[str, Tab] = {}

    async def tab(self, device: dict[str, Any]) -> Tab:
        key = json.dumps(device, sort_keys=True)
        if key not in self.opened:
            self.opened[key] = await Tab.open(self.browser, device)
        tab = self.opened[key]
        tab.console.clear()
        await tab.page.unroute_all()
        return tab

    async def close(self) -> None:
        for tab in self.opened.values():
            await tab.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tabs(browser: Browser) -> AsyncIterator[Tabs]:
    pool = Tabs(browser)
    yield pool
    await pool.close()


async def screenshot(page: Page, path: Path) -> None:
    """The whole page: when it fits the viewport, the viewport's shot (the same picture,
    at half the cost of Chromium's full-page capture)."""
    fits = await page.evaluate(
        "document.documentElement.scrollHeight <= innerHeight"
        " && document.documentElement.scrollWidth <= innerWidth"
    )
    await page.screenshot(path=str(path), full_page=not fits)
    data = await asyncio.to_thread(path.read_bytes)
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 2000


def expired_token() -> str:
    """A link of shop's ``activate`` that expired five seconds ago."""
    now_us = time.time_ns() // 1000
    return TokenCodec([SECRET.encode()]).sign_link(
        LinkClaims(random_link_id(), "shop", "activate", "42", None, now_us, now_us // 10**6 - 5, 1)
    )


def landed(url: str, origin: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == origin
    return parts.path, parse_qs(parts.query)


async def scan(url: str) -> None:
    """What mail scanners and unfurlers do: GET and HEAD, many times, without cookies."""

    tls = ssl.create_default_context()  # built once: loading the CA bundle takes ~30 ms

    async def fetch(method: str, agent: str) -> None:
        async with httpx.AsyncClient(timeout=30, verify=tls) as scanner:  # new: no cookies
            response = await scanner.request(method, url, headers={"User-Agent": agent})
        assert response.status_code == 200, response.text
        assert "set-cookie" not in response.headers
        assert response.headers["cache-control"] == "no-store"

    requests = [
        fetch(method, SCANNER_AGENTS[i % len(SCANNER_AGENTS)])
        for i in range(50)
        for method in ("GET", "HEAD")
    ]
    for start in range(0, len(requests), 10):
        await asyncio.gather(*requests[start : start + 10])


async def test_page_link_survives_scanners_and_redeems_on_click(
    tabs: Tabs, shop: Shop, landing: LandingServer, database_url: str, tmp_path: Path
) -> None:
    await shop.action("activate", confirm="page", label="Activate your account")
    url, link_id = await shop.mint("activate")
    await scan(url)
    assert await count(database_url, "claims") == 0

    tab = await tabs.tab(IN["en"])
    page = tab.page
    response = await page.goto(url)
    assert response is not None
    assert response.status == 200
    button = page.get_by_role("button", name="Confirm")
    await button.wait_for()
    assert await page.inner_text("h1") == "Activate your account"
    assert "Example Shop" in await page.inner_text("main")
    await screenshot(page, tmp_path / "confirm-desktop.png")
    assert await count(database_url, "claims") == 0
    assert await count(database_url, "redemptions") == 0

    async with page.expect_navigation(url=f"{landing.origin}/welcome?**"):
        await button.click()
    path, query = landed(page.url, landing.origin)
    assert path == "/welcome"
    assert query["link_id"] == [link_id]
    assert await count(database_url, "redemptions") == 1
    assert await page.inner_text("h1") == "Welcome back"

    # Back in the mail, the person opens the link again: "already used", not "invalid".
    await page.goto(url)
    path, query = landed(page.url, landing.origin)
    assert (path, query["error"]) == ("/oops", ["used"])
    assert await count(database_url, "redemptions") == 1
    assert tab.csp_violations() == []


async def test_on_a_phone_a_stale_form_is_offered_again(
    tabs: Tabs, shop: Shop, landing: LandingServer, database_url: str, tmp_path: Path
) -> None:
    await shop.action("activate", confirm="page", label="Confirm your email address")
    url, link_id = await shop.mint("activate")
    tab = await tabs.tab(PHONE)
    page = tab.page
    await page.goto(url)
    await screenshot(page, tmp_path / "confirm-phone.png")
    box = await page.get_by_role("button", name="Confirm").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["viewport"]["width"]  # no sideways scrolling

    # A form whose nonce is no good (here: replaced) is refused and offered again.
    await page.locator("input[name=confirm]").evaluate("field => { field.value = 'stale'; }")
    async with page.expect_navigation(url=url):
        await page.get_by_role("button", name="Confirm").tap()
    assert "Nothing was done" in await page.inner_text("main")
    assert await count(database_url, "claims") == 0
    async with page.expect_navigation(url=f"{landing.origin}/welcome?**"):
        await page.get_by_role("button", name="Confirm").tap()
    assert landed(page.url, landing.origin)[1]["link_id"] == [link_id]
    assert await count(database_url, "redemptions") == 1
    assert tab.csp_violations() == []


async def test_auto_link_redeems_without_a_click_and_with_one_without_script(
    tabs: Tabs, shop: Shop, landing: LandingServer, database_url: str, tmp_path: Path
) -> None:
    """The page's script, with its translated words, submits the form by itself (in French:
    the words are a JSON string in the script); without script the person presses the
    button (in German; the English words are the in-process tests')."""
    await shop.action("login", confirm="auto", label="Sign in to Example Shop")
    url, link_id = await shop.mint("login")
    await scan(url)  # what scanners see does not depend on the language
    assert await count(database_url, "claims") == 0

    tab = await tabs.tab(IN["fr"])
    async with tab.page.expect_navigation(url=f"{landing.origin}/welcome?**"):
        response = await tab.page.goto(url)
    assert response is not None
    assert response.headers["content-language"] == "fr"
    _, query = landed(tab.page.url, landing.origin)
    assert query["link_id"] == [link_id]
    assert await count(database_url, "redemptions") == 1
    assert tab.csp_violations() == []

    url, link_id = await shop.mint("login")
    english = await shop.http.get(url)  # the same page in English, by its HTML
    assert english.status_code == 200
    assert "Press the button" in english.text
    assert f">{CONFIRM_BUTTONS['en']}</button>" in english.text
    tab = await tabs.tab({**IN["de"], "java_script_enabled": False})
    await tab.page.goto(url)
    assert "Drücken Sie die Schaltfläche" in await tab.page.inner_text("main")
    assert await tab.page.evaluate("document.documentElement.lang") == "de"
    await screenshot(tab.page, tmp_path / "auto-no-script-phone-de.png")
    assert await count(database_url, "redemptions") == 1
    async with tab.page.expect_navigation(url=f"{landing.origin}/welcome?**"):
        await tab.page.get_by_role("button", name=CONFIRM_BUTTONS["de"]).tap()
    assert landed(tab.page.url, landing.origin)[1]["link_id"] == [link_id]
    assert await count(database_url, "redemptions") == 2


async def test_an_expired_link_lands_with_a_resend_hint_that_buys_a_working_link(
    tabs: Tabs, shop: Shop, landing: LandingServer, database_url: str
) -> None:
    await shop.action("activate", confirm="page")
    tab = await tabs.tab(PHONE)
    await tab.page.goto(f"{shop.base_url}/r/{expired_token()}")
    path, query = landed(tab.page.url, landing.origin)
    assert (path, query["error"]) == ("/oops", ["expired"])
    # The failure page's "send me a new link": its backend trades the hint.
    resent = await shop.http.post(
        "/v1/links/resend", json={"resend": query["resend"][0]}, headers=shop.headers
    )
    assert resent.status_code == 201, resent.text
    assert resent.json()["subject"] == "42"
    await tab.page.goto(resent.json()["url"])
    async with tab.page.expect_navigation(url=f"{landing.origin}/welcome?**"):
        await tab.page.get_by_role("button", name="Confirm").click()
    assert landed(tab.page.url, landing.origin)[1]["link_id"] == [resent.json()["id"]]
    assert await count(database_url, "redemptions") == 1
    assert tab.csp_violations() == []


async def opened(tab: Tab, url: str, status: int, language: str) -> str:
    """Open ``url``: its status, its language (header and ``lang``); returns the title."""
    response = await tab.page.goto(url)
    assert response is not None
    assert response.status == status, url
    headers = await response.all_headers()
    assert headers["content-language"] == language
    assert headers["vary"] == "Accept-Language"
    # One round trip: the document's language, its body's margin, its title.
    shown = await tab.page.evaluate(
        "[document.documentElement.lang, getComputedStyle(document.body).margin, document.title]"
    )
    assert shown[0] == language
    assert shown[1] == "0px"  # the page's nonce'd style applied (a browser's default is 8px)
    title: str = shown[2]
    return title


def by_language(names: list[str], languages: list[str]) -> dict[str, list[str]]:
    """``names`` dealt out to ``languages`` in turn: each name once, each language asked for."""
    assert len(names) >= len(languages)
    return {language: names[i :: len(languages)] for i, language in enumerate(languages)}


async def test_link_pages_in_the_locales_language(
    tabs: Tabs, shop: Shop, landing: LandingServer, database_url: str
) -> None:
    """The pages a person reaches through the running service, each once, in the language
    of the browser's locale (never English: a page that ignored the locale would show).
    The expired link, with no failure URL, sends the person back to the sender."""
    await shop.action("activate", failure_url=None)
    await shop.action("login", confirm="page", failure_url=None, label="Sign in")
    used, _ = await shop.mint("activate")
    async with httpx.AsyncClient(follow_redirects=False, timeout=30) as person:
        redeemed = await person.get(used)
    assert redeemed.status_code == 303, redeemed.text
    revoked, revoked_id = await shop.mint("activate")
    await shop.revoke(revoked_id)
    confirm, _ = await shop.mint("login")
    claims = await count(database_url, "claims")
    links = {
        "invalid": (f"{shop.base_url}/r/garbage", 400),
        "expired": (f"{shop.base_url}/r/{expired_token()}", 410),
        "used": (used, 410),
        "revoked": (revoked, 410),
        "not_found": (f"{shop.base_url}/r/a%0Ab", 404),
        "confirm": (confirm, 200),
    }
    dealt = by_language(list(links), ["de", "fr", "es"])
    for language, kinds in dealt.items():
        tab = await tabs.tab(IN[language])
        gettext = translations(language).gettext
        for kind in kinds:
            url, status = links[kind]
            title = await opened(tab, url, status, language)
            if kind == "confirm":
                assert title == "Sign in"  # the client's own words
                await tab.page.get_by_role("button", name=CONFIRM_BUTTONS[language]).wait_for()
                continue
            assert title == gettext(PAGES[kind].title)
            assert await tab.page.inner_text("h1") == title
            if kind == "expired":
                assert title == EXPIRED_TITLES[language]
                ask = gettext("Ask the sender for a new link.")
                assert ask != "Ask the sender for a new link."
                assert ask in await tab.page.inner_text("main")
        assert tab.csp_violations() == []
    assert await count(database_url, "claims") == claims  # no page claimed anything


DEMO_PAGES: dict[str, dict[str, object]] = {
    "demo-done": {"kind": "demo", "error": None, "link_id": "l1", "redemption_id": "r1"},
    "demo-failed": {"kind": "demo", "error": "expired", "link_id": "l1", "redemption_id": ""},
}
EVERY_PAGE = [*sorted(PAGES), *DEMO_PAGES]


def rendered(pages: Pages, name: str, language: str) -> tuple[int, dict[str, str], bytes]:
    """The page ``name`` as the service renders it: status, headers, body."""
    if name in PAGES:
        response = pages.error(name, language)
    else:
        response = pages.html("demo.html", 200, language, DEMO_PAGES[name])
    return response.status_code, dict(response.headers), bytes(response.body)


def expected_title(name: str, language: str) -> str:
    gettext = translations(language).gettext
    if name in PAGES:
        return gettext(PAGES[name].title)
    if name == "demo-done":
        return gettext("Link redeemed")
    return gettext("Link refused: %(error)s") % {"error": "expired"}


def expected_status(name: str) -> int:
    return PAGES[name].status if name in PAGES else 200


@pytest.mark.parametrize("language", list(LOCALES))
async def test_every_page_is_worded_in_every_language(language: str) -> None:
    """No browser: what the browser test below sees of each page in one language, every
    page shows in every language (status, headers, ``lang``, title and heading)."""
    pages = Pages()
    for name in EVERY_PAGE:
        status, headers, body = rendered(pages, name, language)
        html = body.decode()
        assert status == expected_status(name), name
        assert headers["content-language"] == language
        assert headers["vary"] == "Accept-Language"
        assert f'<html lang="{language}">' in html, name
        title = expected_title(name, language).replace("'", "&#39;")
        assert f"<title>{title}</title>" in html, name
        assert f"<h1>{title}</h1>" in html, name
        if language != "en":
            assert expected_title(name, language) != expected_title(name, "en"), name
    assert expected_title("expired", language) == EXPIRED_TITLES[language]


async def test_every_page_renders_in_the_locales_language(tabs: Tabs) -> None:
    """Every page, those only a failure in production shows included, once each, in the
    language of the locale of the browser it is shown to (each locale asks for some).

    The route handler answers as the service would: it negotiates the language
    from the Accept-Language Chromium sends and renders the page with its headers.
    """
    pages = Pages()

    async def answer(route: Route) -> None:
        sent = await route.request.all_headers()
        language = language_of([(b"accept-language", sent["accept-language"].encode())])
        status, headers, body = rendered(pages, urlsplit(route.request.url).path[1:], language)
        await route.fulfill(status=status, headers=headers, body=body)

    for language, names in by_language(EVERY_PAGE, list(LOCALES)).items():
        tab = await tabs.tab(IN[language])
        await tab.page.route(f"{RENDERED_ORIGIN}/**", answer)
        for name in names:
            title = await opened(tab, f"{RENDERED_ORIGIN}/{name}", expected_status(name), language)
            assert title == expected_title(name, language)
            assert await tab.page.inner_text("h1") == title
        assert tab.csp_violations() == []


@asynccontextmanager
async def in_process(database_url: str, origin: str, **settings: Any) -> AsyncIterator[InProcess]:
    """An app of this process on ``database_url``, for Chromium's requests to ``origin``."""
    app = create_app(
        Settings(
            database_url=database_url,
            secret_keys=SECRET,
            admin_token=ADMIN_TOKEN,
            public_base_url=origin,
            **settings,
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=transport, base_url=origin) as http,
    ):
        yield InProcess(http)


@dataclass
class InProcess:
    """An in-process app's client, and the route handler that hands it Chromium's requests
    and Chromium its answers, headers (its CSP) and all."""

    http: httpx.AsyncClient

    async def answer(self, route: Route) -> None:
        request = route.request
        response = await self.http.request(
            request.method,
            request.url,
            headers=await request.all_headers(),
            content=request.post_data_buffer,
        )
        await route.fulfill(
            status=response.status_code, headers=dict(response.headers), body=response.content
        )


OPERATOR_PAGE = """{% extends "base.html" %}
{% block title %}{{ page.title }} · Example Corp{% endblock %}
{% block main %}
  <h1 class="operator">{{ page.title }}</h1>
  <p>{{ page.next_step }}</p>
  <script>document.title = "replaced by a script";</script>
{% endblock %}
"""
OPERATOR_STYLE = "body { margin: 0; background: rebeccapurple; color: white; }\n"
BROKEN_CONFIRM = '{% extends "base.html" %}{% block main %}{{ no_such_value.x }}{% endblock %}'


async def test_an_operator_pages_dir_is_used_and_cannot_loosen_the_page(
    tabs: Tabs,
    database_url: str,
    landing: LandingServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An app of its own, made with ``PAGES_DIR`` (the module's process has none), in-process:
    Chromium's requests for its origin are handed to it, its answers (headers and all) back.
    (That ``serve`` reads ``PAGES_DIR`` from the environment: ``test_pages_dir.py``.)"""
    pages_dir = tmp_path / "pages"
    pages_dir.mkdir()
    (pages_dir / "page.html").write_text(OPERATOR_PAGE)
    (pages_dir / "style.css").write_text(OPERATOR_STYLE)
    (pages_dir / "confirm.html").write_text(BROKEN_CONFIRM)
    caplog.set_level(logging.WARNING, logger="service.pages.render")
    async with in_process(database_url, RENDERED_ORIGIN, pages_dir=pages_dir) as app:
        shop = await Shop(app.http, RENDERED_ORIGIN, landing).setup()
        await shop.action("activate", confirm="page", label="Activer le compte")
        tab = await tabs.tab(IN["fr"])
        await tab.page.route(f"{RENDERED_ORIGIN}/**", app.answer)
        title = await opened(tab, f"{RENDERED_ORIGIN}/r/garbage", 400, "fr")
        # The operator's template and style, translated; its script did not run.
        assert title == "Ce lien n'est pas valide · Example Corp"
        assert await tab.page.inner_text("h1.operator") == "Ce lien n'est pas valide"
        background = "getComputedStyle(document.body).backgroundColor"
        assert await tab.page.evaluate(background) == "rgb(102, 51, 153)"
        assert len(tab.csp_violations()) == 1

        # A confirm.html that cannot render: the built-in page, which still works.
        url, link_id = await shop.mint("activate")
        for _ in range(3):
            assert await opened(tab, url, 200, "fr") == "Activer le compte"
        async with tab.page.expect_navigation(url=f"{landing.origin}/welcome?**"):
            await tab.page.get_by_role("button", name="Confirmer").click()
        assert landed(tab.page.url, landing.origin)[1]["link_id"] == [link_id]
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "service.pages.render" and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "PAGES_DIR: confirm.html failed to render" in warnings[0]
    assert "no_such_value" in warnings[0]


async def test_the_docs_render_every_operation_offline(tabs: Tabs, database_url: str) -> None:
    """``/docs`` (Swagger UI) from the service's own files, under its own CSP, with no
    internet: an in-process app answers Chromium's requests for its origin, and every
    request to anything else is aborted. The page must render every operation and the
    webhook. (The page and its files, without a browser: ``test_docs.py``.)"""
    async with in_process(database_url, RENDERED_ORIGIN) as app:
        operations = (await app.http.get("/openapi.json")).json()["paths"]
        ids = [op["operationId"] for methods in operations.values() for op in methods.values()]
        elsewhere: list[str] = []

        async def offline(route: Route) -> None:
            if route.request.url.startswith(f"{RENDERED_ORIGIN}/"):
                await app.answer(route)
            else:
                elsewhere.append(route.request.url)
                await route.abort("internetdisconnected")

        tab = await tabs.tab(IN["en"])
        await tab.page.route("**/*", offline)
        response = await tab.page.goto(f"{RENDERED_ORIGIN}/docs")
        assert response is not None
        assert response.status == 200
        page = tab.page
        await page.locator("#operations-links-mintLink").wait_for()
        await page.get_by_text("link.redeemed").first.wait_for()
        shown = await page.locator(".opblock-summary-operation-id").all_inner_texts()
        assert set(ids) <= set(shown)
        assert "Mint one link" in await page.inner_text("#operations-links-mintLink")

        # An operation opens on its example and its problem codes.
        await page.locator("#operations-links-mintLink .opblock-summary-control").click()
        details = page.locator("#operations-links-mintLink")
        await details.get_by_text("activate_user").first.wait_for()
        assert "unknown_action" in await details.inner_text()

    assert elsewhere == []
    assert tab.csp_violations() == []
    assert not [line for line in tab.console if "Failed to load" in line], tab.console
