"""The redirect allowlist: scheme, host and port exact, path by prefix at a segment boundary."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.responses import RedirectResponse

from service.api.redirect import LinkRedirect
from service.pages import LINK_HEADERS
from service.redirects import is_allowed, with_query

ALLOWED = ["https://good.example/app/", "https://good.example:8443/", "http://localhost:3000/cb"]


@pytest.mark.parametrize(
    "url",
    [
        "https://good.example/app/",
        "https://good.example/app/welcome?x=1",
        "https://GOOD.example/app/x",
        "https://good.example:443/app/x",
        "https://good.example:8443/anything",
        "http://localhost:3000/cb",
        "http://localhost:3000/cb/next",
    ],
)
def test_allowed(url: str) -> None:
    assert is_allowed(url, ALLOWED)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/app/",  # another host
        "https://good.example.evil/app/",  # host-suffix trick
        "https://good.exampleevil.com/app/",
        "https://evil.good.example/app/",  # subdomain
        "https://good.example@evil/app/",  # userinfo trick
        "https://good.example:pw@evil.example/app/",
        "https://user@good.example/app/",
        "http://good.example/app/",  # another scheme
        "ftp://good.example/app/",
        "https://good.example:444/app/",  # another port
        "https://good.example/other",  # outside the path
        "https://good.example/application",  # prefix without a segment boundary
        "http://localhost:3000/cbx",
        "https://good.example/app/../admin",  # dot segments
        "https://good.example/app/%2e%2e/admin",
        "//evil/app/",  # scheme-relative
        "//good.example/app/",
        "/app/",  # relative
        "javascript:alert(1)",
        "JavaScript://good.example/app/%0aalert(1)",
        "data:text/html,hi",
        "https://good.example\\@evil/app/",
        "https://good.example/app/\n",
        " https://good.example/app/",
        "https:///good.example/app/",
        "",
        "https://good.example:99999/app/",
    ],
)
def test_refused(url: str) -> None:
    assert not is_allowed(url, ALLOWED)


def test_with_query_keeps_existing_parameters() -> None:
    url = with_query("https://good.example/app/done?ref=mail&x=1#top", {"link_id": "L", "e": "a b"})
    assert url == "https://good.example/app/done?ref=mail&x=1&link_id=L&e=a+b#top"
    assert with_query("https://good.example/", {"a": "1"}) == "https://good.example/?a=1"


@pytest.mark.parametrize(
    "params",
    [
        {"link_id": "AbC-_9.~x", "redemption_id": "r" * 16, "code": ""},
        {"error": "used", "link_id": "L", "reason": "out of stock"},
        {"error": "expired", "resend": "a+b/c=", "x": "ü&=#%"},
        {"k y": "v", "": ""},
    ],
)
def test_the_query_is_what_urlencode_writes(params: dict[str, str]) -> None:
    """``with_query`` writes plain ids and words as they are, and the rest as urlencode."""
    url = "https://good.example/app/done?ref=mail"
    assert with_query(url, params) == f"{url}&{urlencode(params)}"


@pytest.mark.parametrize(
    "url",
    [
        "https://good.example/app/done?link_id=L&redemption_id=R&code=C",
        "https://good.example/a b/ü?q=x y&e=ä#frag ment",
        "http://[::1]:8080/p;x?q=%41%zz&o=(1)*!$'",
        'https://good.example/x?q=<a>|{b}^`c`"d"\\e',
    ],
)
def test_a_link_redirect_is_starlettes_redirect_response(url: str) -> None:
    """The redemption's 303 (built directly) has RedirectResponse's status, headers in
    their order, and body."""
    ours, theirs = LinkRedirect(url), RedirectResponse(url, status_code=303, headers=LINK_HEADERS)
    assert (ours.status_code, ours.raw_headers, ours.body) == (
        theirs.status_code,
        theirs.raw_headers,
        theirs.body,
    )
    assert ours.background is None


def unsplit_with_query(url: str, params: dict[str, str]) -> str:
    """What ``with_query`` answered before it cached where parameters go in a URL."""
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


URL_PIECES = st.sampled_from(
    ["https:", "http:", "//", "good.example", ":8080", "/", "a b", "ü", "?", "&", "=", "#", "x"]
)


@settings(max_examples=400, deadline=None)
@given(
    url=st.lists(URL_PIECES, max_size=10).map("".join),
    params=st.dictionaries(
        st.sampled_from(["link_id", "error", "code", "k y"]),
        st.sampled_from(["L-1_a.b~", "", "a b", "ü", "x=y&z"]),
        max_size=3,
    ),
)
def test_with_query_is_urlsplit_and_urlunsplit(url: str, params: dict[str, str]) -> None:
    """Any URL (with or without a query or fragment, relative, odd), any parameters
    (none at all too): the URL that splitting and joining it again with the query
    extended makes."""
    assert with_query(url, params) == unsplit_with_query(url, params)
    assert with_query(url, params) == unsplit_with_query(url, params)  # cached the second time


def test_the_allowlist_answer_is_the_same_from_the_cache() -> None:
    """``is_allowed`` remembers its answer for a client's allowlist (a tuple), and
    gives the same answer for any other iterable of the same entries."""
    for url in ("https://good.example/app/x", "https://good.example/apps", "https://evil.example/"):
        listed = list(ALLOWED)
        assert is_allowed(url, tuple(ALLOWED)) == is_allowed(url, listed)
        assert is_allowed(url, tuple(ALLOWED)) == is_allowed(url, iter(listed))
