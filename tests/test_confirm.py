"""Confirmation pages (``confirm: "page"`` / ``"auto"``) and the pages people see, in-process.

The same flows in a real browser against a real process: ``test_browser.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from markupsafe import escape

from service.pages import PAGES, Pages, csp_source
from service.state import AppState
from service.tokens import BadData, ConfirmClaims, LinkClaims, Purpose, TokenCodec
from tests.conftest import SHOP_ORIGIN, Tenant, link_path, make_tenant
from tests.support.database import POSTGRES, SQLITE
from tests.support.links import random_link_id
from tests.test_redeem import SECURITY_HEADERS, count, redirect_of

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

Headers = dict[str, str]
NONCE_FIELD = re.compile(r'<input type="hidden" name="confirm" value="([^"]+)">')
# Any attribute or CSS that would make the browser fetch something from elsewhere.
EXTERNAL_REFERENCE = re.compile(
    r"""(?:\b(?:src|href|action|srcset|poster|data)\s*=\s*["']?\s*(?:https?:)?//)|url\(|@import""",
    re.IGNORECASE,
)
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&"


def assert_people_page(response: httpx.Response, status: int) -> str:
    """Status, security headers, a strict CSP and self-contained HTML; returns the HTML."""
    assert response.status_code == status, response.text
    return check_page(response.headers, response.text)


def check_page(headers: Mapping[str, str], html: str) -> str:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name
    assert headers["content-type"].startswith("text/html")
    policy = headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert re.fullmatch(r"'nonce-[\w-]{16,}'", directives["style-src"])
    assert "unsafe" not in policy
    assert "*" not in policy
    language = headers["content-language"]
    assert f'<html lang="{language}">' in html
    assert headers["vary"] == "Accept-Language"
    assert 'name="viewport"' in html
    assert EXTERNAL_REFERENCE.search(html) is None
    nonce = directives["style-src"][len("'nonce-") : -1]
    for tag in re.findall(r"<(?:style|script)\b[^>]*>", html):
        assert f'nonce="{nonce}"' in tag  # every inline style and script is the policy's
    return html


async def confirm_link(shop: Tenant, admin: Headers, mode: str = "page", **fields: Any) -> Any:
    await shop.put_action("activate", admin, confirm=mode, label="Activate your account")
    return await shop.mint(**fields)


def nonce_of(html: str) -> str:
    match = NONCE_FIELD.search(html)
    assert match is not None, html
    return match.group(1)


def post_nonce(http: httpx.AsyncClient, link: dict[str, Any], nonce: str) -> Any:
    return http.post(link_path(link), data={"confirm": nonce})


async def test_page_link_shows_a_page_and_only_its_form_redeems(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    link = await confirm_link(shop, admin_headers)
    for _ in range(3):
        html = assert_people_page(await http.get(link_path(link)), 200)
        head = await http.head(link_path(link))
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-security-policy"].startswith("default-src 'none'")
    assert "Activate your account" in html
    assert "shop inc." in html
    assert '<form method="post"' in html
    assert "<script" not in html  # "page" mode waits for the click
    assert await count(database_url, "claims") == 0

    target, query = redirect_of(await post_nonce(http, link, nonce_of(html)))
    assert target == f"{SHOP_ORIGIN}/welcome"
    assert query["link_id"] == [link["id"]]
    assert await count(database_url, "redemptions") == 1


async def test_confirm_page_csp_lets_the_form_reach_the_redirect_targets(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    link = await confirm_link(shop, admin_headers)
    policy = (await http.get(link_path(link))).headers["content-security-policy"]
    assert f"form-action 'self' {SHOP_ORIGIN}" in policy
    assert "script-src 'none'" in policy
    failed = Pages().error("expired", "en").headers["content-security-policy"]
    assert "form-action 'none'" in failed


async def test_returning_to_a_used_link_says_already_used(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    link = await confirm_link(shop, admin_headers)
    html = (await http.get(link_path(link))).text
    redirect_of(await post_nonce(http, link, nonce_of(html)))

    _, query = redirect_of(await http.get(link_path(link)))
    assert query["error"] == ["used"]
    _, query = redirect_of(await http.head(link_path(link)))
    assert query["error"] == ["used"]
    # The old page's form, submitted again, is told the same and redeems nothing.
    _, query = redirect_of(await post_nonce(http, link, nonce_of(html)))
    assert query["error"] == ["used"]

    await shop.put_action(
        "activate", admin_headers, confirm="page", failure_url=None, label="Activate"
    )
    page = assert_people_page(await http.get(link_path(link)), 410)
    assert PAGES["used"].title in page
    assert PAGES["invalid"].title not in page
    assert await count(database_url, "redemptions") == 1


@pytest.mark.parametrize("body", [None, {}, {"confirm": ""}, {"confirm": "x.y"}, {"other": "1"}])
async def test_a_post_without_a_valid_nonce_redeems_nothing(
    shop: Tenant,
    http: httpx.AsyncClient,
    admin_headers: Headers,
    database_url: str,
    body: dict[str, str] | None,
) -> None:
    link = await confirm_link(shop, admin_headers)
    response = await http.post(link_path(link), data=body)
    html = assert_people_page(response, 403)
    assert "Nothing was done" in html
    assert nonce_of(html)  # the button is offered again, with a fresh nonce
    assert await count(database_url, "claims") == 0
    assert "redemption_id" in redirect_of(await post_nonce(http, link, nonce_of(html)))[1]


async def test_nonces_of_other_links_other_purposes_or_times_are_refused(
    shop: Tenant,
    http: httpx.AsyncClient,
    admin_headers: Headers,
    state: AppState,
    database_url: str,
) -> None:
    link = await confirm_link(shop, admin_headers)
    other = await shop.mint()
    other_nonce = nonce_of((await http.get(link_path(other))).text)
    now = int(time.time())
    refused = [
        other_nonce,
        link["token"],  # a genuine token, but of another purpose
        state.codec.sign_confirm(ConfirmClaims(link["id"], now - 3601)),  # too old
        state.codec.sign_confirm(ConfirmClaims(link["id"], now + 3600)),  # from the future
        TokenCodec([b"another-deployment-key-0123456789abcdef"]).sign_confirm(
            ConfirmClaims(link["id"], now)
        ),
        state.codec.sign(Purpose.CONFIRM, {"l": link["id"]}),  # no issue time
        "A" * 5000,
    ]
    for nonce in refused:
        assert_people_page(await post_nonce(http, link, nonce), 403)
    # A JSON body or a query parameter is not the form either.
    good = state.codec.sign_confirm(ConfirmClaims(link["id"], now - 60))
    assert (await http.post(link_path(link), json={"confirm": good})).status_code == 403
    assert (await http.post(link_path(link), params={"confirm": good})).status_code == 403
    assert await count(database_url, "claims") == 0
    assert "redemption_id" in redirect_of(await post_nonce(http, link, good))[1]


async def test_auto_page_submits_itself_with_a_script_its_policy_allows(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    link = await confirm_link(shop, admin_headers, mode="auto")
    response = await http.get(link_path(link))
    html = assert_people_page(response, 200)
    nonce = re.search(r"script-src 'nonce-([\w-]+)'", response.headers["content-security-policy"])
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in html
    assert "<button" in html  # for browsers without script
    assert await count(database_url, "claims") == 0
    # A bare POST gets the page back, but not one that submits itself again.
    refused = assert_people_page(await http.post(link_path(link)), 403)
    assert "<script" not in refused


async def test_failures_of_confirm_links_show_without_a_page(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, state: AppState
) -> None:
    await shop.put_action("activate", admin_headers, confirm="page")
    now_us = time.time_ns() // 1000
    expired = state.codec.sign_link(
        LinkClaims(random_link_id(), "shop", "activate", None, None, now_us, now_us // 10**6 - 5, 1)
    )
    for method in ("GET", "HEAD", "POST"):
        _, query = redirect_of(await http.request(method, f"/r/{expired}"))
        assert query["error"] == ["expired"]
    link = await shop.mint()
    await shop.put_action("activate", admin_headers, confirm="page", enabled=False)
    _, query = redirect_of(await http.get(link_path(link)))
    assert query["error"] == ["disabled"]


async def test_a_forged_confirm_token_never_shows_the_page(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    link = await confirm_link(shop, admin_headers)
    token = link["token"]
    body, _, signature = token.rpartition(".")
    forged = f"{body}.{'B' if signature[0] != 'B' else 'C'}{signature[1:]}"
    for method in ("GET", "POST"):
        response = await http.request(method, f"/r/{forged}")
        html = assert_people_page(response, 400)
        assert "<form" not in html
        assert "Activate your account" not in html
    assert (await http.head(f"/r/{forged}")).status_code == 400
    assert await count(database_url, "claims") == 0


async def test_values_from_tokens_and_configuration_are_escaped(
    http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    tenant = await make_tenant(http, admin_headers, "evil", name=HOSTILE)
    await tenant.put_action("activate", admin_headers, confirm="auto", label=HOSTILE)
    link = await tenant.mint(subject=HOSTILE, data={"html": HOSTILE, "k": "</script>"})
    html = assert_people_page(await http.get(link_path(link)), 200)
    assert "<img" not in html
    assert "alert(1)</script>" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # name, label, subject
    assert "&#34;&#39;&amp;" in html
    assert html.count("<script") == 1  # only the page's own
    huge_agent = {"User-Agent": "Mozilla/5.0 " + HOSTILE * 200}
    assert (await http.get(link_path(link), headers=huge_agent)).status_code == 200
    assert await count(database_url, "claims") == 0


@pytest.mark.parametrize("kind", sorted(PAGES))
def test_every_error_page_is_self_contained_and_strict(kind: str) -> None:
    response = Pages().error(kind, "en")
    assert response.status_code == PAGES[kind].status
    html = check_page(response.headers, bytes(response.body).decode())
    for text in (PAGES[kind].title, PAGES[kind].message, PAGES[kind].next_step):
        assert escape(text) in html
    assert f'data-page="{kind}"' in html
    assert "form-action 'none'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("url", "source"),
    [
        ("https://shop.example/welcome?x=1", "https://shop.example"),
        ("http://127.0.0.1:8123/done", "http://127.0.0.1:8123"),
        ("https://[::1]:8443/", "https://[::1]:8443"),
        ("https://Shop.Example:443/a", "https://shop.example:443"),
        ("https://bücher.example/", "https:"),
        ("https://a;script-src/", "https:"),
        ("javascript:alert(1)", None),
        ("https://x:99999/", None),
    ],
)
def test_csp_sources_are_origins_or_a_safe_fallback(url: str, source: str | None) -> None:
    assert csp_source(url) == source


def test_confirm_nonces_are_bound_to_their_purpose(state: AppState) -> None:
    nonce = state.codec.sign_confirm(ConfirmClaims("abc", 1))
    assert state.codec.verify_confirm(nonce) == ConfirmClaims("abc", 1)
    with pytest.raises(BadData):
        state.codec.verify_link(nonce)
    with pytest.raises(BadData):
        state.codec.verify_confirm(state.codec.sign(Purpose.LINK, {"l": "abc", "t": 1}))
    with pytest.raises(BadData):
        state.codec.verify_confirm(state.codec.sign(Purpose.CONFIRM, {"l": 5, "t": 1}))
    with pytest.raises(BadData):
        state.codec.verify_confirm(state.codec.sign(Purpose.CONFIRM, ["abc", 1]))
