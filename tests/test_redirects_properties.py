"""Properties of the redirect allowlist, with hypothesis and a browser's URL parser as oracle.

The promise: a URL is only allowed when the place a browser goes to (its
scheme, host and port, and a path under the entry's) is the place an
allowlist entry names. "Where a browser goes" is decided by ada, the WHATWG
URL parser that browsers and Node implement, fed the ``Location`` header
exactly as the service would send it. Entries and URLs are generated with
the tricks that make parsers disagree: userinfo, uppercase and IDN hosts,
Greek final sigma, the Kelvin sign, fullwidth and ideographic dots,
trailing dots, IPv4 in hex and IPv6 literals, percent-encoded hosts,
backslashes, default and leading-zero ports, dot segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import ada_url
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import RedirectResponse

from service.redirects import is_allowed, with_query
from tests.support.scale import scaled

pytestmark = pytest.mark.heavy  # more examples with HEAVY_SCALE=full

# In CI hypothesis runs derandomized (its ``ci`` profile): every commit checks the same
# sample, and the search for new counterexamples is HEAVY_SCALE=full's. CI's sizes were
# 200 and 600; of seven broken variants of ``is_allowed`` tried by hand, these caught the
# same ones at half and at a quarter of that (test_redirects.py's fixed cases catch six).
EXAMPLES = settings(
    max_examples=scaled(100, 3000),
    deadline=None,  # the CI machine is shared; timing is not what is tested here
    suppress_health_check=[HealthCheck.too_slow],
)
# Near misses find a broken rule in about 1 example of 50: give them more.
MANY_EXAMPLES = settings(EXAMPLES, max_examples=scaled(300, 10_000))
DEFAULT_PORTS = {"http": 80, "https": 443}

# --- what a browser makes of a URL -----------------------------------------------


@dataclass(frozen=True)
class Place:
    scheme: str
    host: str
    port: int
    path: str

    def is_under(self, entry: Place) -> bool:
        if (self.scheme, self.host, self.port) != (entry.scheme, entry.host, entry.port):
            return False
        prefix = entry.path
        return self.path == prefix or self.path.startswith(
            prefix if prefix.endswith("/") else prefix + "/"
        )


def browser_place(url: str) -> Place | None:
    """Where a browser goes for ``url``, or None when it cannot parse it."""
    try:
        parsed = ada_url.URL(url)
    except ValueError:
        return None
    scheme = parsed.protocol.rstrip(":")
    if scheme not in DEFAULT_PORTS:
        return None
    port = int(parsed.port) if parsed.port else DEFAULT_PORTS[scheme]
    return Place(scheme, parsed.hostname, port, parsed.pathname)


def location_sent_for(url: str) -> str:
    """The ``Location`` header the service sends for a success redirect to ``url``."""
    target = with_query(url, {"link_id": "L", "redemption_id": "R"})
    return RedirectResponse(target, status_code=303).headers["location"]


# --- generated entries and URLs -----------------------------------------------------

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
plain_host = st.lists(label, min_size=1, max_size=3).map(".".join)
tricky_host = st.sampled_from(
    [
        "good.example",
        "GOOD.example",
        "good.example.",
        "good.example..",
        "kood.example",
        "\u212aood.example",  # Kelvin sign: lowercases to k
        "ας.example",  # Greek final sigma
        "ασ.example",
        "ΑΣ.example",
        "straße.example",
        "strasse.example",
        "xn--strae-oqa.example",
        "göod.example",
        "xn--god-sna.example",
        "good\u3002example",  # ideographic full stop: a dot to browsers
        "ｇｏｏｄ.example",  # fullwidth letters
        "good%2eexample",
        "good.example%2f",
        "good.example%40evil.example",
        "evil.example#good.example",
        "evil.example?good.example",
        "evil.example\\good.example",
        "127.0.0.1",
        "0x7f.1",
        "2130706433",
        "0177.0.0.1",
        "localhost",
        "[::1]",
        "[0:0:0:0:0:0:0:1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[fe80::1%25eth0]",
        "evil.example",
    ]
)
host = st.one_of(plain_host, tricky_host)
scheme = st.sampled_from(["https", "http", "HTTPS", "Http", "ftp", "javascript", "data", ""])
separator = st.sampled_from(["://", "://", ":/", ":///", ":\\\\", ":/\\", ":", "://\t", ":\t//"])
userinfo = st.sampled_from(
    ["", "user@", "user:pw@", "good.example@", "@", ":@", "%40@", "good.example%40", "a@b@"]
)
port = st.sampled_from(
    [
        "",
        ":443",
        ":80",
        ":8443",
        ":0443",
        ":00080",
        ":",
        ":99999",
        ":-1",
        ":+443",
        ":\u0664\u0664\u0663",  # Arabic-Indic digits
        ":443:80",
    ]
)
entry_port = st.sampled_from(["", ":443", ":80", ":8443", ":0443"])
path_segment = st.sampled_from(
    [
        "app",
        "App",
        "app.",
        "apps",
        "x",
        "",
        ".",
        "..",
        "%2e%2e",
        ".%2E",
        "%2e.",
        "..\\",
        "\\..",
        "%2F",
        "%5C..",
        "%252e",
        "a b",
        "ä",
        "~",
        "%7E",
    ]
)
path = st.lists(path_segment, max_size=4).map(lambda parts: "/" + "/".join(parts))
path_glue = st.sampled_from(["/", "/", "\\", "/./", "//", "%2F", ";/"])
suffix = st.sampled_from(["", "?q=1", "#frag", "?next=https://evil.example/", "\n", " ", "#/../x"])


clean_path = st.lists(
    st.sampled_from(["app", "App", "apps", "x", "ä", "~", "%7E"]), max_size=3
).map(lambda parts: "/" + "/".join(parts))


@dataclass(frozen=True)
class Parts:
    """A URL in pieces, so that one piece at a time can be bent."""

    scheme: str
    separator: str
    userinfo: str
    host: str
    port: str
    path: str
    suffix: str = ""

    @property
    def url(self) -> str:
        return (
            f"{self.scheme}{self.separator}{self.userinfo}{self.host}{self.port}"
            f"{self.path}{self.suffix}"
        )


@st.composite
def entry_parts(draw: st.DrawFn) -> Parts:
    """Mostly entries an operator would write, sometimes odd ones."""
    return Parts(
        scheme=draw(st.sampled_from(["http", "https"])),
        separator="://",
        userinfo="",
        host=draw(st.one_of(plain_host, tricky_host.filter(_is_a_host))),
        port=draw(entry_port),
        path=draw(st.one_of(clean_path, clean_path, path)),
    )


def _is_a_host(value: str) -> bool:
    return is_allowed(f"https://{value}/", [f"https://{value}/"])


@st.composite
def bent_host(draw: st.DrawFn, original: str) -> str:
    how = draw(st.integers(0, 7))
    if how == 0:
        return original.upper()
    if how == 1:
        return original + "."
    if how == 2:
        return original.replace(
            ".", draw(st.sampled_from(["\u3002", "\uff0e", "%2e", "..", "。"])), 1
        )
    if how == 3:
        return original.replace("k", "\u212a").replace("s", "ſ")  # Kelvin sign, long s
    if how == 4:
        return f"%{ord(original[0]):02x}{original[1:]}" if original else original
    if how == 5:
        return original + draw(st.sampled_from([".evil.example", "evil.example", "\\evil.example"]))
    if how == 6:
        return draw(st.sampled_from(["evil.example", "", " ", "[::1]"])) + original
    return draw(host)


@st.composite
def bent_path(draw: st.DrawFn, original: str) -> str:
    if draw(st.booleans()):
        return draw(path)
    extra = draw(st.lists(path_segment, min_size=1, max_size=4))
    return original + draw(path_glue) + draw(path_glue).join(extra)


@st.composite
def near_misses(draw: st.DrawFn, entry: Parts) -> str:
    """The entry with one or two of its pieces bent by the tricks above."""
    bent = draw(st.sets(st.integers(0, 6), min_size=1, max_size=2))
    bend = [piece in bent for piece in range(7)]
    return Parts(
        scheme=draw(scheme) if bend[0] else entry.scheme,
        separator=draw(separator) if bend[1] else entry.separator,
        userinfo=draw(userinfo) if bend[2] else entry.userinfo,
        host=draw(bent_host(entry.host)) if bend[3] else entry.host,
        port=draw(port) if bend[4] else entry.port,
        path=draw(bent_path(entry.path)) if bend[5] else entry.path,
        suffix=draw(suffix) if bend[6] else "",
    ).url


@st.composite
def urls(draw: st.DrawFn) -> str:
    return Parts(
        draw(scheme),
        draw(separator),
        draw(userinfo),
        draw(host),
        draw(port),
        draw(path),
        draw(suffix),
    ).url


allowlists = st.lists(entry_parts(), min_size=1, max_size=4)


@st.composite
def clean_entries(draw: st.DrawFn) -> str:
    return (
        f"{draw(st.sampled_from(['http', 'https']))}://{draw(plain_host)}"
        f"{draw(st.sampled_from(['', ':443', ':80', ':8443']))}{draw(clean_path)}"
    )


# --- the properties -----------------------------------------------------------------


def assert_only_to_allowed_places(url: str, allowlist: list[str]) -> None:
    if not is_allowed(url, allowlist):
        return
    target = browser_place(location_sent_for(url))
    if target is None:
        return  # a browser refuses to follow it (e.g. http://a.0/): it goes nowhere
    allowed = [p for p in map(browser_place, allowlist) if p is not None]
    assert any(target.is_under(entry) for entry in allowed), (
        f"{url!r} is allowed by {allowlist!r}, but a browser goes to {target}"
    )


@MANY_EXAMPLES
@given(allowlist=allowlists, data=st.data())
def test_near_misses_of_an_entry_only_go_where_an_entry_allows(
    allowlist: list[Parts], data: st.DataObject
) -> None:
    url = data.draw(near_misses(data.draw(st.sampled_from(allowlist))))
    assert_only_to_allowed_places(url, [entry.url for entry in allowlist])


@EXAMPLES
@given(url=urls(), allowlist=allowlists)
def test_generated_urls_only_go_where_an_entry_allows(url: str, allowlist: list[Parts]) -> None:
    assert_only_to_allowed_places(url, [entry.url for entry in allowlist])


@EXAMPLES
@given(url=st.text(st.characters(codec=None, exclude_categories=())), allowlist=allowlists)
def test_arbitrary_text_never_raises(url: str, allowlist: list[Parts]) -> None:
    assert_only_to_allowed_places(url, [entry.url for entry in allowlist])


@EXAMPLES
@given(entry=clean_entries(), more=clean_path, query=st.sampled_from(["", "?q=1", "#f"]))
def test_urls_under_a_clean_entry_are_allowed(entry: str, more: str, query: str) -> None:
    """The other half: the allowlist is not just refusing everything."""
    scheme, _, rest = entry.partition("://")
    origin, slash, entry_path = rest.partition("/")
    base = entry if entry.endswith("/") else entry + "/"
    url = base + more.lstrip("/") + query
    assert is_allowed(url, [entry])
    assert is_allowed(f"{scheme.upper()}://{origin.upper()}{slash}{entry_path}{query}", [entry])
    assert_only_to_allowed_places(url, [entry])
