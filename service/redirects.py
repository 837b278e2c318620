"""Redirect targets: the allowlist rule and adding query parameters.

An allowlist entry is a URL prefix. A target is allowed when its scheme, host
and port equal the entry's exactly and its path starts with the entry's path
at a segment boundary (``/account`` allows ``/account`` and ``/account/x``,
not ``/accounts``). Userinfo, relative URLs, dot segments, backslashes and
control characters are refused outright, whatever the allowlist says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from service.errors import RedirectNotAllowed

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048


class InvalidUrl(ValueError):
    """Not an absolute http(s) URL we are willing to redirect anyone to."""


@lru_cache(maxsize=512)  # every redemption checks its target again: the same few URLs
def _origin_and_path(url: str) -> tuple[str, str, int, str]:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidUrl("empty or too long")
    if any(ord(ch) < 0x21 or ch in "\\\x7f" for ch in url):
        raise InvalidUrl("whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise InvalidUrl("only absolute http and https URLs are allowed")
    if not parts.hostname or "@" in parts.netloc:
        raise InvalidUrl("a host is required and userinfo is not allowed")
    path = parts.path or "/"
    if any(segment in {".", ".."} for segment in unquote(path).split("/")):
        raise InvalidUrl("dot segments are not allowed")
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme], path


def validate_absolute_url(url: str) -> str:
    _origin_and_path(url)
    return url


def is_allowed(url: str, prefixes: Iterable[str]) -> bool:
    """True when ``url`` falls under one of ``prefixes``; never raises."""
    # Cached per URL and allowlist (every redemption asks twice); a client's allowlist is
    # already a tuple, which ``tuple()`` hands back as it is.
    return _allowed_by(url, tuple(prefixes))


@lru_cache(maxsize=512)
def _allowed_by(url: str, prefixes: tuple[str, ...]) -> bool:
    try:
        scheme, host, port, path = _origin_and_path(url)
    except InvalidUrl:
        return False
    for prefix in prefixes:
        try:
            p_scheme, p_host, p_port, p_path = _origin_and_path(prefix)
        except InvalidUrl:
            continue
        if (scheme, host, port) != (p_scheme, p_host, p_port):
            continue
        if p_path.endswith("/") or path == p_path or path.startswith(p_path + "/"):
            if path.startswith(p_path):
                return True
    return False


def require_allowed(client_id: str, prefixes: Iterable[str], **urls: str | None) -> None:
    """Raise ``RedirectNotAllowed`` naming the first given URL outside ``prefixes``."""
    prefixes = tuple(prefixes)
    for field, url in urls.items():
        if url is not None and not is_allowed(url, prefixes):
            raise RedirectNotAllowed(
                f"{field} is not within the allowed_redirects of client '{client_id}'",
                errors=[{"loc": [field], "msg": "not within allowed_redirects"}],
            )


# What ``urlencode`` (``quote_plus``) leaves as it is: ids, tokens and outcome words.
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


def _urlencode(params: Mapping[str, str]) -> str:
    """``urlencode(params)``, without quoting what needs none (every redirect's case)."""
    # One match over every key and value at once ("=" is no plain character).
    if _PLAIN.fullmatch("".join(params) + "".join(params.values())) is not None:
        return "&".join([f"{k}={v}" for k, v in params.items()])
    return urlencode(params)


@lru_cache(maxsize=512)  # the same few success and failure URLs, on every redirect
def _around_query(url: str) -> tuple[str, str]:
    """What comes before appended parameters (through "?" and the query ``url`` has, then
    "&") and after them (the fragment): ``urlunsplit``'s way of joining a URL's parts."""
    parts = urlsplit(url)
    head = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    head += f"?{parts.query}&" if parts.query else "?"
    return head, f"#{parts.fragment}" if parts.fragment else ""


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` appended, keeping the query it already has: what
    ``urlunsplit`` makes of ``urlsplit(url)`` with the query extended."""
    extra = _urlencode(params)
    if not extra:  # no parameters (no redirect's case): an empty query is dropped
        parts = urlsplit(url)
        query = f"{parts.query}&" if parts.query else ""
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    head, tail = _around_query(url)
    return f"{head}{extra}{tail}"
