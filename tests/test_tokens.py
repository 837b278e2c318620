"""The token format: only genuine, unexpired-or-expired tokens of the right purpose verify."""

from __future__ import annotations

import hashlib
import hmac
import re
import string
from datetime import UTC, datetime
from typing import Any

import pytest
from itsdangerous import URLSafeSerializer

from service.tokens import (
    COMPRESS_FROM_BYTES,
    LINK_ID_REGEX,
    BadData,
    ConfirmClaims,
    ExchangeClaims,
    LinkClaims,
    Purpose,
    TokenCodec,
    _KeyedSha256,
)
from tests.support.links import random_link_id

OLD_KEY = b"old-key-0123456789abcdefghijklmnopqrstuvwxyz"
NEW_KEY = b"new-key-0123456789abcdefghijklmnopqrstuvwxyz"


def make_claims(**overrides: object) -> LinkClaims:
    fields: dict[str, object] = {
        "link_id": random_link_id(),
        "client_id": "shop",
        "action": "activate",
        "subject": "42",
        "data": {"plan": "pro", "nested": [1, 2.5, None, "ü"]},
        "issued_at_us": 1_780_000_000_123_456,
        "expires_at": 1_780_086_400,
        "max_uses": 1,
        "once_key": None,
        "success_url": "https://shop.example/done",
        "failure_url": None,
    }
    fields.update(overrides)
    return LinkClaims(**fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    codec = TokenCodec([NEW_KEY])
    claims = make_claims(once_key="voucher:1", max_uses=None)
    assert codec.verify_link(codec.sign_link(claims)) == claims


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"order": 12345, "plan": "pro"},
        "x" * 500,  # compressed
        2**70,  # beyond orjson: the standard library's encoding
        {"é☃": [1e16, -0.0, 1.5e-7]},
    ],
)
def test_tokens_are_stock_itsdangerous_tokens(data: Any) -> None:
    """The codec signs without itsdangerous' layers (orjson, a pre-keyed HMAC): stock
    itsdangerous still reads every token, and signs its payload to the same token."""
    codec = TokenCodec([OLD_KEY, NEW_KEY])
    claims = make_claims(data=data)
    token = codec.sign_link(claims)
    stock = URLSafeSerializer(
        NEW_KEY,
        salt=Purpose.LINK.value,
        signer_kwargs={"digest_method": hashlib.sha256, "key_derivation": "hmac"},
    )
    assert stock.loads(token) == claims.to_wire()
    payload, _, _ = token.rpartition(".")
    assert stock.make_signer().sign(payload.encode()).decode() == token
    assert codec.verify_link(token) == claims


def test_only_payloads_from_the_threshold_on_are_compressed() -> None:
    """A typical link's payload is signed as it is; from ``COMPRESS_FROM_BYTES`` of JSON
    on, compressed (when zlib shortens it, as it does a run of one letter)."""
    codec = TokenCodec([NEW_KEY])
    below = codec.sign(Purpose.CURSOR, "x" * (COMPRESS_FROM_BYTES - 3))  # JSON: 2 quotes
    at = codec.sign(Purpose.CURSOR, "x" * (COMPRESS_FROM_BYTES - 2))
    assert not below.startswith(".")
    assert at.startswith(".")
    assert codec.verify(Purpose.CURSOR, below) == "x" * (COMPRESS_FROM_BYTES - 3)
    assert codec.verify(Purpose.CURSOR, at) == "x" * (COMPRESS_FROM_BYTES - 2)
    assert not codec.sign_link(make_claims()).startswith(".")  # a typical link


def test_every_single_character_change_is_refused() -> None:
    codec = TokenCodec([NEW_KEY])
    token = codec.sign_link(make_claims())
    alphabet = string.ascii_letters + string.digits + "-_."
    for position, original in enumerate(token):
        replacement = alphabet[(alphabet.index(original) + 1) % len(alphabet)]
        forged = token[:position] + replacement + token[position + 1 :]
        with pytest.raises(BadData):
            codec.verify_link(forged)


def test_standard_base64_spellings_of_the_signature_are_refused() -> None:
    """Python's decoder reads "+" as "-" and "/" as "_": the same signature bytes,
    yet not the token we issued (found by test_tokens_properties)."""
    codec = TokenCodec([NEW_KEY])
    forged_any = False
    while not forged_any:
        token = codec.sign_link(make_claims(link_id=random_link_id()))
        payload, _, signature = token.rpartition(".")
        for urlsafe, standard in (("-", "+"), ("_", "/")):
            position = signature.find(urlsafe)
            if position < 0:
                continue
            forged_any = True
            forged = signature[:position] + standard + signature[position + 1 :]
            with pytest.raises(BadData):
                codec.verify_link(f"{payload}.{forged}")
        with pytest.raises(BadData):
            codec.verify_link(f"{payload}.{signature[:20]}!{signature[21:]}")


def test_truncation_and_extension_are_refused() -> None:
    codec = TokenCodec([NEW_KEY])
    token = codec.sign_link(make_claims())
    for forged in (token[:-1], token[1:], token + "A", "A" + token, token[: len(token) // 2]):
        with pytest.raises(BadData):
            codec.verify_link(forged)


def test_a_token_of_another_purpose_is_refused() -> None:
    codec = TokenCodec([NEW_KEY])
    other = codec.sign(Purpose.CURSOR, make_claims().to_wire())
    with pytest.raises(BadData):
        codec.verify_link(other)


def test_another_key_is_refused() -> None:
    token = TokenCodec([OLD_KEY]).sign_link(make_claims())
    with pytest.raises(BadData):
        TokenCodec([NEW_KEY]).verify_link(token)


def test_rotation_old_links_verify_while_their_key_is_listed() -> None:
    claims = make_claims()
    old_token = TokenCodec([OLD_KEY]).sign_link(claims)
    rotated = TokenCodec([OLD_KEY, NEW_KEY])
    assert rotated.verify_link(old_token) == claims
    new_token = rotated.sign_link(claims)
    assert TokenCodec([NEW_KEY]).verify_link(new_token) == claims  # signed with the newest
    with pytest.raises(BadData):
        TokenCodec([NEW_KEY]).verify_link(old_token)  # old key removed


def test_expiry_is_inclusive_of_the_last_second() -> None:
    claims = make_claims(expires_at=1_780_086_400)
    assert not claims.is_expired(datetime.fromtimestamp(1_780_086_399, UTC))
    assert not claims.is_expired(datetime.fromtimestamp(1_780_086_400, UTC))
    assert claims.is_expired(datetime.fromtimestamp(1_780_086_401, UTC))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "a.b",
        "x" * 10_000,
        "%00%ff%2e",
        "ü" * 50,
        "\ud800",
        "eyJhIjoxfQ.AAAA",
        ".eJzLSM3JyVcozy_KSQEAGgQEXQ.AAAA",
        "A" * 20_000,
        "\x00\x01\x02",
    ],
)
def test_garbage_raises_only_bad_data(garbage: str) -> None:
    with pytest.raises(BadData):
        TokenCodec([NEW_KEY]).verify_link(garbage)


def test_a_genuine_signature_over_a_wrong_shape_is_refused() -> None:
    codec = TokenCodec([NEW_KEY])
    for payload in ([1, 2], {"i": 1}, "text", {"i": "x", "c": "y", "a": "z", "t": "1", "e": 1}):
        with pytest.raises(BadData):
            codec.verify_link(codec.sign(Purpose.LINK, payload))


def test_link_ids_are_bound_to_their_client() -> None:
    codec = TokenCodec([NEW_KEY])
    ids = {codec.mint_link_id("shop") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 20 and i.isascii() for i in ids)
    link_id = ids.pop()
    assert codec.owns_link_id("shop", link_id)
    assert not codec.owns_link_id("other", link_id)
    assert not TokenCodec([OLD_KEY]).owns_link_id("shop", link_id)
    assert TokenCodec([NEW_KEY, OLD_KEY]).owns_link_id("shop", link_id)  # any listed key
    for unknown in ("", random_link_id(), link_id[:-1], link_id + "A", "ü" * 20, "\ud800" * 20):
        assert not codec.owns_link_id("shop", unknown)
    changed = link_id[:3] + ("A" if link_id[3] != "A" else "B") + link_id[4:]
    assert not codec.owns_link_id("shop", changed)


def test_link_ids_minted_together_are_distinct_and_bound_to_their_client() -> None:
    """A batch's ids share one read of the CSPRNG: each still has its own random part."""
    codec = TokenCodec([OLD_KEY, NEW_KEY])
    ids = codec.mint_link_ids("shöp", 500)
    assert len(set(ids)) == len({i[:16] for i in ids}) == 500
    assert all(re.fullmatch(LINK_ID_REGEX, i) for i in ids)
    assert all(codec.owns_link_id("shöp", i) for i in ids)
    assert not any(codec.owns_link_id("shop", i) for i in ids)
    assert codec.mint_link_ids("shop", 0) == []


@pytest.mark.parametrize("length", [0, 1, 32, 63, 64, 65, 200])
def test_the_signing_hmac_is_hmac_sha256(length: int) -> None:
    """``_KeyedSha256`` hashes the padded key blocks once: the bytes of ``hmac.digest``
    for keys shorter than, as long as and longer than SHA-256's block."""
    key = bytes(range(256))[:length] if length <= 256 else b""
    keyed = _KeyedSha256(key)
    for message in (b"", b"x", b"m" * 64, b"\x00\xff" * 100):
        assert keyed.digest(message) == hmac.digest(key, message, "sha256")


# --- exchange codes and typed codes (API.md, "Finishing the flow") --------------------


def test_an_exchange_code_round_trips_and_is_no_other_token() -> None:
    codec = TokenCodec([NEW_KEY])
    claims = ExchangeClaims("shop", "rid-0123456789ab", 1_780_000_000)
    code = codec.sign_exchange(claims)
    assert codec.verify_exchange(code) == claims
    with pytest.raises(BadData):
        codec.verify_link(code)
    link_token = codec.sign_link(make_claims())
    nonce = codec.sign_confirm(ConfirmClaims("x", 1))
    cursor = codec.sign(Purpose.CURSOR, ["shop", "rid-0123456789ab", 1_780_000_000])
    for other in (link_token, nonce, cursor):
        with pytest.raises(BadData):
            codec.verify_exchange(other)
    with pytest.raises(BadData):
        TokenCodec([OLD_KEY]).verify_exchange(code)
    assert TokenCodec([NEW_KEY, OLD_KEY]).verify_exchange(code) == claims


@pytest.mark.parametrize(
    "payload", [["shop", "r"], ["shop", "r", "1"], ["shop", 1, 1], {"c": "shop"}, "x", None]
)
def test_an_exchange_code_of_a_wrong_shape_is_refused(payload: object) -> None:
    codec = TokenCodec([NEW_KEY])
    with pytest.raises(BadData):
        codec.verify_exchange(codec.sign(Purpose.EXCHANGE, payload))


def test_the_typed_code_flag_travels_in_the_token_and_only_when_set() -> None:
    codec = TokenCodec([NEW_KEY])
    plain, coded = make_claims(), make_claims(code=True)
    assert "k" not in plain.to_wire()  # tokens without a typed code keep their format
    assert codec.verify_link(codec.sign_link(coded)) == coded
    assert codec.verify_link(codec.sign_link(plain)).code is False
    for flag in (True, 2, "1", 1.0, 0):
        with pytest.raises(BadData):
            codec.verify_link(codec.sign(Purpose.LINK, {**coded.to_wire(), "k": flag}))


def test_typed_codes_are_six_digits_fixed_per_link_and_differ_between_links() -> None:
    codec = TokenCodec([NEW_KEY])
    link = make_claims(code=True)
    code = codec.typed_code(link)
    assert len(code) == 6
    assert code.isdigit()
    assert codec.typed_code(link) == code
    assert codec.typed_code_matches(link, code)
    codes = {codec.typed_code(make_claims(link_id=random_link_id())) for _ in range(200)}
    assert len(codes) > 190  # spread over a million values
    # The client is part of what is signed: the same link id under another client
    # gets another code (all 50 equal would be a one-in-10**300 coincidence).
    ids = [random_link_id() for _ in range(50)]
    shop = [codec.typed_code(make_claims(link_id=i)) for i in ids]
    other = [codec.typed_code(make_claims(link_id=i, client_id="other")) for i in ids]
    assert sum(a != b for a, b in zip(shop, other, strict=True)) > 45


def test_typed_codes_survive_key_rotation_while_the_key_is_listed() -> None:
    link = make_claims(code=True)
    old_code = TokenCodec([OLD_KEY]).typed_code(link)
    assert TokenCodec([OLD_KEY, NEW_KEY]).typed_code_matches(link, old_code)
    assert TokenCodec([NEW_KEY, OLD_KEY]).typed_code_matches(link, old_code)
    new_code = TokenCodec([OLD_KEY, NEW_KEY]).typed_code(link)  # minted with the newest
    assert new_code == TokenCodec([NEW_KEY]).typed_code(link)
    if new_code != old_code:
        assert not TokenCodec([NEW_KEY]).typed_code_matches(link, old_code)


@pytest.mark.parametrize(
    "shape", ["", "12345", "1234567", "12345a", " 12345", "１２３４５６", "12 345", "\x00" * 6]
)
def test_a_code_of_the_wrong_shape_never_matches(shape: str) -> None:
    codec = TokenCodec([NEW_KEY])
    assert not codec.typed_code_matches(make_claims(code=True), shape)


def stock_serializer(keys: list[bytes], purpose: Purpose) -> URLSafeSerializer:
    """itsdangerous as it comes, with the codec's settings: what verification must agree with."""
    return URLSafeSerializer(
        keys,
        salt=purpose.value,
        signer_kwargs={"digest_method": hashlib.sha256, "key_derivation": "hmac"},
    )


def canonical_signature(token: str) -> bool:
    """Whether the token's signature is the one spelling the service issues."""
    return (
        re.fullmatch(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]", token.rpartition(".")[2]) is not None
    )


def test_verification_answers_what_itsdangerous_answers() -> None:
    """The codec reads tokens without itsdangerous' layers (``tokens._loads``): for
    genuine tokens under either listed key, compressed or not, for tampered ones and for
    genuine signatures over payloads that are not base64, zlib, UTF-8 or JSON, it
    returns the payload itsdangerous returns, or refuses what itsdangerous refuses."""
    codec = TokenCodec([OLD_KEY, NEW_KEY])
    stock = stock_serializer([OLD_KEY, NEW_KEY], Purpose.LINK)
    signer = stock.make_signer(Purpose.LINK.value)
    tokens = [
        TokenCodec([OLD_KEY]).sign_link(make_claims()),
        codec.sign_link(make_claims(data={"note": "x" * 300})),  # compressed: "."
        codec.sign_link(make_claims(data=None, subject=None, success_url=None)),  # not
        stock.dumps({"a": [1, "ü"]}),
        stock.dumps(["not", "an", "object"]),
    ]
    for raw in (b"!!!", b".!!!", b".AAAA", b"_w", b"WzE", b"bm90IGpzb24", b"", b"."):
        tokens.append(signer.sign(raw).decode())  # genuine signatures over bad payloads
    genuine = tokens[1]
    for i in range(len(genuine)):
        tokens.append(genuine[:i] + ("A" if genuine[i] != "A" else "B") + genuine[i + 1 :])
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    sibling = alphabet[alphabet.index(genuine[-1]) + 1]  # the same bytes, another spelling
    tokens.append(genuine[:-1] + sibling)
    for token in tokens:
        try:
            expected: object = stock.loads(token)
        except BadData:
            expected = BadData
        if not canonical_signature(token):
            # Stock itsdangerous also takes other spellings of the same signature bytes
            # (a last character differing in its two unused bits: a genuine token ending
            # in "A", changed to "B"); the codec refuses them, on purpose (see
            # test_standard_base64_spellings_of_the_signature_are_refused).
            expected = BadData
        try:
            got: object = codec.verify(Purpose.LINK, token)
        except BadData:
            got = BadData
        assert got == expected, token


def test_an_exchange_code_is_a_stock_token_of_its_salt_signed_uncompressed() -> None:
    """``sign_exchange`` signs without itsdangerous' layers and never compresses: stock
    itsdangerous (newest key, exchange salt) reads the code, and signs the same payload
    to the same code when it does not compress either; the codec reads stock codes."""
    stock = stock_serializer([OLD_KEY, NEW_KEY], Purpose.EXCHANGE)
    codec = TokenCodec([OLD_KEY, NEW_KEY])
    for claims in (
        ExchangeClaims("shop", "rid-0123456789ab", 1_780_000_000),
        ExchangeClaims("s" * 64, "r" * 64, 0),  # zlib would shorten this one
        ExchangeClaims("caf\u00e9", "rid-\U0001f600", 2**40),
    ):
        code = codec.sign_exchange(claims)
        assert not code.startswith(".")  # not compressed
        assert stock.loads(code) == claims.to_wire()
        assert codec.verify_exchange(code) == claims
        assert codec.verify_exchange(stock.dumps(claims.to_wire())) == claims
    plain = ExchangeClaims("shop", "rid-0123456789ab", 1_780_000_000)
    assert codec.sign_exchange(plain) == stock.dumps(plain.to_wire())
