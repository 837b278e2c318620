"""Which language a person reads: the best match of ``Accept-Language`` among ours.

The header is a list of language ranges with quality values
(``de-CH, de;q=0.9, en;q=0.5``, RFC 9110 12.5.4). They are ordered by
quality (ties keep the header's order), ranges of quality 0 are refused
outright, ``*`` stands for every language not named otherwise, and
Babel's ``negotiate_locale`` picks the first range that one of ours
answers, a region falling back to its language (``de-AT`` is ``de``).
Nothing matches: English.

Every page answer negotiates, so the result is cached per header value
(browsers send a handful of distinct values), and only the first
``MAX_HEADER_CHARS`` of a header and its first ``MAX_RANGES`` ranges are
read: a 10 KB header of garbage costs what a short one does, and the cache
holds short keys only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

LANGUAGES = ("en", "de", "fr", "es")
DEFAULT_LANGUAGE = "en"
MAX_HEADER_CHARS = 512
MAX_RANGES = 24
CACHED_HEADERS = 256

ACCEPT_LANGUAGE = b"accept-language"
_RANGE = re.compile(r"\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
_QUALITY = re.compile(r"q=(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)", re.IGNORECASE)


def language_ranges(header: str) -> list[tuple[str, float]]:
    """The well-formed ranges of a header with their qualities, best first.

    A malformed range or quality drops that one entry, not the header.
    """
    ranges: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",", MAX_RANGES)[:MAX_RANGES]):
        tag, *parameters = (part.strip() for part in item.split(";"))
        if not _RANGE.fullmatch(tag):
            continue
        quality = 1.0
        for parameter in parameters:
            match = _QUALITY.fullmatch(parameter.replace(" ", ""))
            if match is None:
                break
            quality = float(match.group(1))
        else:
            ranges.append((-quality, position, tag))
    return [(tag, -negative) for negative, _, tag in sorted(ranges)]


@lru_cache(maxsize=CACHED_HEADERS)
def _negotiate(header: str) -> str:
    ranges = language_ranges(header)
    refused = {tag.lower() for tag, quality in ranges if quality == 0}
    available = [language for language in LANGUAGES if language not in refused]
    named = {tag.lower().split("-")[0] for tag, _ in ranges}
    preferred: list[str] = []
    for tag, quality in ranges:
        if quality == 0:
            continue
        if tag == "*":
            preferred.extend(language for language in available if language not in named)
        else:
            preferred.append(tag)
    match = _first_available(preferred, available)
    return match.lower() if match is not None and match.lower() in available else DEFAULT_LANGUAGE


def _first_available(preferred: list[str], available: list[str]) -> str | None:
    """The first preferred tag that is available, or whose primary subtag is (``de-CH``
    → ``de``): Babel's ``negotiate_locale`` for languages without a region, where its
    aliases (``de`` → ``de_DE``) never match. Not Babel's own: importing Babel costs
    every worker ~0.7 MB (bench/README.md, "Memory per worker")."""
    for tag in preferred:
        if tag.lower() in available:
            return tag
        primary, dash, _ = tag.partition("-")
        if dash and primary.lower() in available:
            return primary
    return None


def negotiate(header: str | None) -> str:
    """The language to answer a request whose ``Accept-Language`` is ``header``."""
    if not header:
        return DEFAULT_LANGUAGE
    if len(header) > MAX_HEADER_CHARS:
        # Only whole entries: a range cut in half could read as another one.
        header = header[: header.rfind(",", 0, MAX_HEADER_CHARS + 1) + 1]
    return _negotiate(header)


def language_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The language for an ASGI request's raw headers (several fields join as one list)."""
    values = [value for name, value in headers if name == ACCEPT_LANGUAGE]
    if not values:
        return DEFAULT_LANGUAGE
    return negotiate(b",".join(values).decode("latin-1"))
