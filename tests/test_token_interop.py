"""Tokens stay stock itsdangerous tokens although the codec compresses its own way.

``service.tokens`` compresses only payloads of ``COMPRESS_FROM_BYTES`` or more,
with a small zlib window (cheaper per mint; bench/README.md). These tests hold
it to the format: stock itsdangerous, configured as DESIGN.md describes, reads
what the codec signs, and the codec reads what stock itsdangerous signs.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import pytest
from itsdangerous import URLSafeSerializer

from service.tokens import LinkClaims, Purpose, TokenCodec
from tests.support.links import random_link_id

KEYS = [
    b"old-key-0123456789abcdefghijklmnopqrstuvwxyz",
    b"new-key-0123456789abcdefghijklmnopqrstuv",
]


def stock(keys: list[bytes]) -> URLSafeSerializer:
    return URLSafeSerializer(
        keys,
        salt=Purpose.LINK.value,
        signer_kwargs={"digest_method": hashlib.sha256, "key_derivation": "hmac"},
    )


def claims(data: Any) -> LinkClaims:
    return LinkClaims(
        random_link_id(), "shop", "go", "42", data, 1_780_000_000_000_000, 1_780_086_400, 1
    )


@pytest.mark.parametrize(
    ("data", "compressed"),
    [
        (None, False),  # a typical link: below COMPRESS_FROM_BYTES
        ({"order": 12345, "plan": "pro"}, False),
        ({"note": "x" * 4000}, True),  # the codec's own compressor
        ({"noise": secrets.token_hex(1800)}, True),
    ],
)
def test_stock_itsdangerous_reads_what_the_codec_signs(data: Any, compressed: bool) -> None:
    link = claims(data)
    token = TokenCodec(KEYS).sign_link(link)
    assert token.startswith(".") is compressed
    assert stock(KEYS).loads(token) == link.to_wire()


def test_the_codec_reads_what_stock_itsdangerous_signs_with_any_listed_key() -> None:
    link = claims({"note": "y" * 500})
    codec = TokenCodec(KEYS)
    assert codec.verify_link(stock(KEYS).dumps(link.to_wire())) == link
    assert codec.verify_link(stock(KEYS[:1]).dumps(link.to_wire())) == link
