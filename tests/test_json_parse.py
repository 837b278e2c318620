"""Request bodies are parsed by jiter (``json_depth.parse``): the values are Python's.

FastAPI parses a JSON body with ``json.loads``; the service parses it once
before FastAPI does, with jiter, which measures depth as it parses and is
cheaper. Whatever jiter accepts must read exactly as ``json.loads`` reads it
(types, float bits, key order, duplicate keys), and whatever it refuses for
another reason than depth is ``json.loads``' to read or refuse.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.json_depth import PARSE_DEPTH, TooDeep, parse, refuse_deep
from tests.support.scale import scaled

EXAMPLES = settings(
    max_examples=scaled(300, 30_000),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def same(a: Any, b: Any) -> bool:
    """Equal, type for type, float bit for float bit, keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_parsed_as_python_does(text: bytes) -> None:
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)):
            parse(text)
        return
    assert same(parse(text), expected), text


@pytest.mark.parametrize(
    "text",
    [
        b'{"links":[{"action":"go","data":{"order":12345,"plan":"pro"}}]}',
        b'{"a":1,"b":2,"a":3}',  # the last value, in the first one's place
        b"[NaN, Infinity, -Infinity, 1e400, -1e400, 1e-400, -0.0, -0, 4.9e-324]",
        b"[18446744073709551616, -9223372036854775809, 123456789012345678901234567890]",
        b"1" * 4300,
        b"1" * 4301,  # beyond Python's integer limit: refused by both
        b'"\\ud800"',  # a lone surrogate: jiter refuses, Python reads it
        b'["\\ud83d\\ude00", "\\u00e9", "\\u0000", "\xc3\xa9"]',
        b"\xef\xbb\xbf{}",  # a byte order mark: jiter refuses, Python skips it
        '{"é": [1]}'.encode("utf-16"),  # Python detects UTF-16 and UTF-32
        '{"é": [1]}'.encode("utf-32-le"),
        b"\xff",
        b'"\xed\xa0\x80"',  # UTF-8 of a surrogate
        b'"a\tb"',
        b"{} x",
        b"[1,]",
        b"",
        b" \n\t\r[] ",
    ],
)
def test_bodies_read_as_python_reads_them(text: bytes) -> None:
    assert_parsed_as_python_does(text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=25,
)
PIECES = [
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"\\ud800",
    b"\\ud83d\\ude00",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\t",
    b",",
    b"]",
    b"{",
    b'"',
    b"\\",
    b"-0",
    b"00",
    b"\xff",
    b"\xed\xa0\x80",
    b"1" * 25,
    b"0." + b"1" * 30,
    b"2.2250738585072011e-308",
]


@EXAMPLES
@given(
    json_values,
    st.booleans(),
    st.sampled_from([None, 2]),
    st.lists(st.tuples(st.integers(0, 500), st.sampled_from(PIECES), st.booleans()), max_size=3),
)
def test_any_json_and_its_near_misses_read_as_python_reads_them(
    value: Any, ascii_only: bool, indent: int | None, edits: list[tuple[int, bytes, bool]]
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode()
    assert_parsed_as_python_does(text)
    for position, piece, replace in edits:
        at = position % (len(text) + 1)
        text = text[:at] + piece + text[at + replace :]
        assert_parsed_as_python_does(text)


@EXAMPLES
@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["%r", "%.17g", "%.30e"]))
def test_floats_read_to_the_same_bits(number: float, spelling: str) -> None:
    assert_parsed_as_python_does((spelling % number).encode())


def test_too_deep_is_refused_as_refuse_deep_refuses_it() -> None:
    siblings = "[]," * PARSE_DEPTH
    deep = "[" * (PARSE_DEPTH + 1) + "]" * (PARSE_DEPTH + 1)
    assert parse(f"[{siblings}{'[' * (PARSE_DEPTH - 1)}{']' * (PARSE_DEPTH - 1)}]".encode())
    for text in (
        f"[{siblings}{deep}]",
        '{"links":[{},{"action":"x","data":' + "[" * 100_000 + "]" * 100_000 + "}]}",
        '{"data": ' + deep + ', "\\ud800": 1}',  # too deep before jiter meets the surrogate
    ):
        with pytest.raises(TooDeep) as parsed:
            parse(text.encode())
        with pytest.raises(TooDeep) as measured:
            refuse_deep(text.encode())
        assert parsed.value.path == measured.value.path


def test_too_deep_behind_what_jiter_refuses_is_still_refused() -> None:
    """A lone surrogate before the deep part: jiter stops at the surrogate, the standard
    library reads the rest, and the value it builds is measured before it is returned."""
    deep = "[" * (PARSE_DEPTH + 1) + "]" * (PARSE_DEPTH + 1)
    with pytest.raises(TooDeep):
        parse(('["\\ud800", ' + deep + "]").encode())
    assert parse(b'["\\ud800", [[1]]]') == ["\ud800", [[1]]]
