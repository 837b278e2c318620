"""How deep JSON may nest, measured by loops, never by recursion.

Python's JSON parser and encoder, pydantic's serializer and ``repr`` recurse
once per level, so a value nested a few hundred levels deep makes them fail
(``RecursionError``, "maximum serialization depth exceeded"), as a 500
wherever nobody expects it. So nesting is bounded wherever JSON comes in:

- a link's ``data`` nests at most ``MAX_DATA_DEPTH`` levels (API.md),
  checked by ``schemas.LinkRequest``;
- a request body nested deeper than ``PARSE_DEPTH`` is refused before
  Python's parser sees it (``parse`` for JSON bodies, ``refuse_deep`` for
  others, used by ``api.json_body``), so no request ever builds a deeper value;
- JSON read back from the database is parsed the same way (``load_stored``),
  and ``data`` deeper than ``MAX_DATA_DEPTH``, which links minted before the
  limit may carry, is shown as null (``shown``).

Depth counts containers: ``1`` and ``"x"`` are 0 levels, ``[]`` and ``{}``
are 1, ``[[1]]`` is 2.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import pydantic_core

MAX_DATA_DEPTH = 32
# What jiter (pydantic_core.from_json), the parser that measures, parses at most:
# its recursion limit is 200 levels below the outermost value.
PARSE_DEPTH = 201

_OPENERS = (b"[", b"{")
_TOO_DEEP = re.compile(r"recursion limit exceeded at line (\d+) column (\d+)")

Path = list[str | int]


class TooDeep(ValueError):
    """JSON text nested deeper than ``PARSE_DEPTH``; ``path`` leads into the deep part."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"JSON nested more than {PARSE_DEPTH} levels deep")
        self.path = path


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers more than ``limit`` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return True
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return False


def shown(data: Any) -> Any:
    """``data`` as the API shows it: null when deeper than ``MAX_DATA_DEPTH`` (old links)."""
    return None if depth_exceeds(data, MAX_DATA_DEPTH) else data


def refuse_deep(text: bytes) -> None:
    """Raise ``TooDeep`` when JSON ``text`` nests deeper than ``PARSE_DEPTH`` levels.

    Anything else passes, JSON or not: its parser says what else is wrong.
    Text with no more than ``PARSE_DEPTH`` brackets cannot be that deep, which
    settles almost every body with two byte counts; the others are parsed
    once by jiter, which is written in Rust and stops at its recursion limit.
    """
    if sum(text.count(opener) for opener in _OPENERS) <= PARSE_DEPTH:
        return
    with contextlib.suppress(_JiterRefused):
        _jiter(text)


def parse(text: bytes) -> Any:
    """``json.loads(text)``, or ``TooDeep`` for text nested deeper than ``PARSE_DEPTH``.

    jiter parses first: it measures as it parses, and parses a batch's body in
    a third of the standard library's instructions (bench/README.md). For text
    that both accept, the values are equal, type for type and float for float
    (jiter reads big integers, ``NaN``, ``Infinity`` and ``1e400`` as Python
    does, last duplicate key wins in the first one's place); text that jiter
    refuses for any other reason than depth (a lone surrogate escape, a byte
    order mark, UTF-16, malformed JSON) is the standard library's to read or
    refuse, as before, and measured after (a lone surrogate before a deep part would
    otherwise pass it unmeasured).
    """
    try:
        return _jiter(text)
    except _JiterRefused:
        pass
    value = json.loads(text)
    if depth_exceeds(value, PARSE_DEPTH):
        raise TooDeep([])
    return value


class _JiterRefused(Exception):
    """Text jiter refuses for another reason than depth: the standard library's to judge."""


def _jiter(text: bytes) -> Any:
    """jiter's value of ``text``; ``TooDeep`` where it stopped for depth, else
    ``_JiterRefused`` for text it refuses for any other reason."""
    try:
        return pydantic_core.from_json(text)
    except ValueError as exc:
        where = _TOO_DEEP.fullmatch(str(exc))
        if where is None:
            raise _JiterRefused from None
        line, column = int(where[1]), int(where[2])
        raise TooDeep(_path_into(text, line, column)) from None


def load_stored(text: str | bytes) -> Any:
    """``json.loads`` for the database's JSON columns; None for a value too deep to parse.

    Only a row written before the limits existed can be that deep.
    """
    try:
        return parse(text.encode() if isinstance(text, str) else text)
    except (TooDeep, RecursionError):
        return None


def _path_into(text: bytes, line: int, column: int) -> Path:
    """The keys and indexes leading to the bracket at ``line``/``column`` (1-based, bytes).

    jiter parses what comes before that bracket as an incomplete document,
    whose last value at each level is the one the bracket is in.
    """
    start = 0
    for _ in range(line - 1):
        start = text.index(b"\n", start) + 1
    try:
        value = pydantic_core.from_json(text[: start + column - 1], allow_partial=True)
    except ValueError:
        return []
    path: Path = []
    while True:
        if isinstance(value, dict) and value:
            key = next(reversed(value))
            path.append(key)
            value = value[key]
        elif isinstance(value, list) and value:
            path.append(len(value) - 1)
            value = value[-1]
        else:
            return path
