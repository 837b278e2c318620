"""Properties of the token format, with hypothesis.

- Whatever JSON a backend puts in a link, and whatever the claims say, a
  signed token verifies back to exactly those claims, under any key list
  that still holds the signing key.
- No change to a genuine token verifies: bit flips, substitutions,
  truncation, extension, padding, the standard base64 alphabet, case
  changes, percent-encoding, a re-encoded payload, another spelling of the
  same signature.
- No mutated exchange code verifies, and no exchange code verifies as
  a link or the other way round; no typed code but a link's own (under a
  listed key) is accepted for that link, whatever string is offered.
- No input makes ``verify`` or ``verify_link`` raise anything but
  ``itsdangerous.BadData``: arbitrary text (surrogates included), arbitrary
  bytes however decoded, token-shaped strings, and genuine signatures over
  payloads of the wrong shape or that are not JSON at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from itsdangerous import Signer
from itsdangerous.encoding import base64_decode, base64_encode

from service.tokens import BadData, ExchangeClaims, LinkClaims, Purpose, TokenCodec
from tests.support.scale import scaled

pytestmark = pytest.mark.heavy  # more examples with HEAVY_SCALE=full

EXAMPLES = settings(
    # Hypothesis's default; derandomized in CI (its ``ci`` profile), so every commit
    # checks the same sample and HEAVY_SCALE=full searches further.
    max_examples=scaled(100, 3000),
    deadline=None,  # the CI machine is shared; timing is not what is tested here
    suppress_health_check=[HealthCheck.too_slow],
)
KEY = b"property-key-0123456789abcdefghijklmnopqrstuvwxyz"
CODEC = TokenCodec([KEY])
URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# --- strategies ------------------------------------------------------------------

# JSON as RFC 8259 defines it: finite numbers, any Unicode text (the HTTP
# layer refuses what is not, see test_hostile_input.py).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
optional_text = st.none() | st.text(max_size=200)

link_claims = st.builds(
    LinkClaims,
    link_id=st.text(min_size=1, max_size=32),
    client_id=st.text(min_size=1, max_size=64),
    action=st.text(min_size=1, max_size=64),
    subject=optional_text,
    data=json_values,
    issued_at_us=st.integers(),
    expires_at=st.integers(),
    max_uses=st.none() | st.integers(min_value=1, max_value=2**31),
    once_key=optional_text,
    success_url=optional_text,
    failure_url=optional_text,
    code=st.booleans(),
)
signing_keys = st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=4, unique=True)
# Every character, lone surrogates included: what a decoded URL path may hold.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)


def sample_token(claims: LinkClaims) -> str:
    return CODEC.sign_link(claims)


# --- round trip ------------------------------------------------------------------


@EXAMPLES
@given(claims=link_claims)
def test_every_claim_round_trips(claims: LinkClaims) -> None:
    assert CODEC.verify_link(CODEC.sign_link(claims)) == claims


@EXAMPLES
@given(data=json_values)
def test_any_json_data_round_trips(data: Any) -> None:
    for purpose in Purpose:
        assert CODEC.verify(purpose, CODEC.sign(purpose, data)) == data


@EXAMPLES
@given(keys=signing_keys, others=signing_keys, claims=link_claims)
def test_rotation_verifies_while_the_signing_key_is_listed(
    keys: list[bytes], others: list[bytes], claims: LinkClaims
) -> None:
    token = TokenCodec(keys).sign_link(claims)  # signed with the newest (last) key
    assert TokenCodec([*others, keys[-1]]).verify_link(token) == claims
    assert TokenCodec([keys[-1], *others]).verify_link(token) == claims
    remaining = [k for k in others if k != keys[-1]]
    if remaining:
        with pytest.raises(BadData):
            TokenCodec(remaining).verify_link(token)


@EXAMPLES
@given(
    claims=link_claims,
    other=st.sampled_from([Purpose.CONFIRM, Purpose.CURSOR, Purpose.EXCHANGE]),
)
def test_a_token_is_only_good_for_its_purpose(claims: LinkClaims, other: Purpose) -> None:
    with pytest.raises(BadData):
        CODEC.verify(other, CODEC.sign_link(claims))


# --- mutations -------------------------------------------------------------------


def _replace(token: str, index: int, new: str) -> str:
    return token[:index] + new + token[index + 1 :]


def signature_respellings(token: str) -> list[str]:
    """Other base64 spellings of the same signature bytes (unused low bits set)."""
    payload, _, signature = token.rpartition(".")
    wanted = base64_decode(signature)
    spellings = []
    for char in URLSAFE:
        candidate = signature[:-1] + char
        if candidate != signature and base64_decode(candidate) == wanted:
            spellings.append(f"{payload}.{candidate}")
    return spellings


def payload_reencodings(token: str) -> list[str]:
    """The same JSON under the same signature, encoded another way."""
    payload, _, signature = token.rpartition(".")
    compressed = payload.startswith(".")
    raw = base64_decode(payload.lstrip("."))
    text = zlib.decompress(raw) if compressed else raw
    obj = json.loads(text)
    variants = [
        base64_encode(text).decode(),  # uncompressed
        "." + base64_encode(zlib.compress(text, 9)).decode(),  # compressed (again)
        base64_encode(json.dumps(obj).encode()).decode(),  # with spaces
        base64_encode(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode()).decode(),
        base64.b64encode(text).decode(),  # standard alphabet, padded
        base64.urlsafe_b64encode(text).decode(),  # URL-safe, padded
    ]
    return [f"{v}.{signature}" for v in variants if v != payload]


@st.composite
def mutated(draw: st.DrawFn, token: str) -> str:
    n = len(token)
    index = draw(st.integers(0, n - 1))
    kind = draw(st.integers(0, 13))
    if kind == 0:  # flip one bit of one character (may leave ASCII)
        bit = draw(st.integers(0, 15))
        return _replace(token, index, chr(ord(token[index]) ^ (1 << bit)))
    if kind == 1:  # any character replaced by any other
        return _replace(token, index, draw(st.characters(codec=None, exclude_categories=())))
    if kind == 2:  # truncated at the end
        return token[:index]
    if kind == 3:  # truncated at the start
        return token[index + 1 :]
    if kind == 4:  # a slice cut out of the middle
        return token[:index] + token[index + draw(st.integers(1, 8)) :]
    if kind == 5:  # extended anywhere
        at = draw(st.integers(0, n))
        return token[:at] + draw(st.text(min_size=1, max_size=8)) + token[at:]
    if kind == 6:  # base64 padding after the payload or the signature
        payload, _, signature = token.rpartition(".")
        pad = draw(st.sampled_from(["=", "==", "==="]))
        return draw(st.sampled_from([f"{payload}{pad}.{signature}", f"{token}{pad}"]))
    if kind == 7:  # the standard base64 alphabet
        return token.replace("-", "+").replace("_", "/")
    if kind == 8:  # case changes: one character, or all of them
        return draw(
            st.sampled_from(
                [_replace(token, index, token[index].swapcase()), token.swapcase(), token.upper()]
            )
        )
    if kind == 9:  # percent-encoding of one character, or of all
        one = _replace(token, index, f"%{ord(token[index]):02X}")
        every = "".join(f"%{ord(c):02X}" for c in token)
        return draw(st.sampled_from([one, every, one.lower()]))
    if kind == 10:  # another spelling of the same signature bytes
        return draw(st.sampled_from(signature_respellings(token) or [token + "A"]))
    if kind == 11:  # the same payload, re-encoded, under the same signature
        return draw(st.sampled_from(payload_reencodings(token)))
    if kind == 12:  # a character doubled
        return token[:index] + token[index] + token[index:]
    # two characters swapped
    other = draw(st.integers(0, n - 1))
    chars = list(token)
    chars[index], chars[other] = chars[other], chars[index]
    return "".join(chars)


@EXAMPLES
@given(claims=link_claims, data=st.data())
def test_every_mutation_of_a_genuine_token_is_refused(
    claims: LinkClaims, data: st.DataObject
) -> None:
    token = sample_token(claims)
    forged = data.draw(mutated(token))
    assume(forged != token)
    with pytest.raises(BadData):
        CODEC.verify_link(forged)


exchange_claims = st.builds(
    ExchangeClaims,
    client_id=st.text(min_size=1, max_size=64),
    redemption_id=st.text(min_size=1, max_size=80),
    issued_at=st.integers(min_value=0, max_value=2**40),
)


@EXAMPLES
@given(claims=exchange_claims, data=st.data())
def test_every_mutation_of_an_exchange_code_is_refused(
    claims: ExchangeClaims, data: st.DataObject
) -> None:
    code = CODEC.sign_exchange(claims)
    assert CODEC.verify_exchange(code) == claims
    forged = data.draw(mutated(code))
    assume(forged != code)
    with pytest.raises(BadData):
        CODEC.verify_exchange(forged)


@EXAMPLES
@given(link=link_claims, exchange=exchange_claims)
def test_links_and_exchange_codes_never_stand_in_for_each_other(
    link: LinkClaims, exchange: ExchangeClaims
) -> None:
    with pytest.raises(BadData):
        CODEC.verify_exchange(CODEC.sign_link(link))
    with pytest.raises(BadData):
        CODEC.verify_link(CODEC.sign_exchange(exchange))


def typed_code_variants(code: str) -> st.SearchStrategy[str]:
    """Strings near a right typed code: one digit changed, cut, padded, spaced, lookalikes."""
    index = st.integers(0, len(code) - 1)
    return st.one_of(
        st.tuples(index, st.sampled_from("0123456789")).map(
            lambda p: code[: p[0]] + p[1] + code[p[0] + 1 :]
        ),
        index.map(lambda i: code[:i] + code[i + 1 :]),
        st.tuples(index, st.sampled_from("0123456789 -\x00")).map(
            lambda p: code[: p[0]] + p[1] + code[p[0] :]
        ),
        st.sampled_from([f" {code}", f"{code} ", f"{code}\n", f"+{code}", f"0{code}"]),
        st.just("".join(chr(0xFF10 + int(c)) for c in code)),  # full-width digits
        st.just("".join(chr(0x0660 + int(c)) for c in code)),  # Arabic-Indic digits
        st.from_regex(r"[0-9]{6}", fullmatch=True),
        any_text,
    )


@EXAMPLES
@given(link=link_claims, data=st.data())
def test_no_string_but_the_links_own_code_is_accepted(
    link: LinkClaims, data: st.DataObject
) -> None:
    code = CODEC.typed_code(link)
    assert CODEC.typed_code_matches(link, code)
    offered = data.draw(typed_code_variants(code))
    assume(offered != code)
    assert not CODEC.typed_code_matches(link, offered)


@EXAMPLES
@given(keys=signing_keys, others=signing_keys, link=link_claims)
def test_typed_codes_verify_under_any_key_list_holding_their_key(
    keys: list[bytes], others: list[bytes], link: LinkClaims
) -> None:
    code = TokenCodec(keys).typed_code(link)  # with the newest (last) key
    assert TokenCodec([*others, keys[-1]]).typed_code_matches(link, code)
    assert TokenCodec([keys[-1], *others]).typed_code_matches(link, code)
    remaining = [k for k in others if k != keys[-1]]
    if remaining:
        expected = any(TokenCodec([k]).typed_code(link) == code for k in remaining)
        assert TokenCodec(remaining).typed_code_matches(link, code) is expected


def test_the_mutations_cover_both_payload_encodings() -> None:
    """Guards the test above: it must see compressed and uncompressed tokens."""
    small = sample_token(LinkClaims("i", "c", "a", None, None, 1, 2, 1))
    large = sample_token(LinkClaims("i", "c", "a", None, "x" * 500, 1, 2, 1))
    assert not small.startswith(".")
    assert large.startswith(".")
    for token in (small, large):
        assert payload_reencodings(token)
        assert signature_respellings(token)  # 32-byte HMAC: two unused bits


# --- nothing but BadData ---------------------------------------------------------


def signed_raw(payload: bytes) -> str:
    """A genuine signature over bytes that are not necessarily JSON (as the codec signs)."""
    signer = Signer(
        KEY, salt=Purpose.LINK.value, digest_method=hashlib.sha256, key_derivation="hmac"
    )
    return signer.sign(payload).decode("ascii")


raw_payloads = st.one_of(
    st.binary().map(lambda b: base64_encode(b)),  # not JSON, maybe not UTF-8
    st.binary().map(lambda b: b"." + base64_encode(b)),  # "compressed", not zlib
    st.binary().map(lambda b: b"." + base64_encode(zlib.compress(b))),  # zlib, not JSON
    st.binary().map(lambda b: b"!" + base64_encode(b)),  # not base64 at all
)
token_shaped = st.from_regex(r"\.?[A-Za-z0-9_-]{0,200}\.[A-Za-z0-9_-]{40,46}", fullmatch=True)
untrusted_text = st.one_of(
    any_text,
    token_shaped,
    st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=400).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.binary(max_size=400).map(lambda b: b.decode("utf-8", "replace")),
)


@EXAMPLES
@given(text=untrusted_text)
def test_arbitrary_text_raises_only_bad_data(text: str) -> None:
    for purpose in Purpose:
        with pytest.raises(BadData):
            CODEC.verify(purpose, text)
    with pytest.raises(BadData):
        CODEC.verify_link(text)


@EXAMPLES
@given(value=st.one_of(st.binary(), st.integers(), st.none(), st.lists(st.text())))
def test_values_that_are_not_text_raise_only_bad_data(value: Any) -> None:
    with pytest.raises(BadData):
        CODEC.verify_link(value)


@EXAMPLES
@given(payload=json_values)
def test_genuine_signatures_over_wrong_shapes_raise_only_bad_data(payload: Any) -> None:
    token = CODEC.sign(Purpose.LINK, payload)
    try:
        claims = CODEC.verify_link(token)
    except BadData:
        return
    assert isinstance(claims, LinkClaims)  # the shape happened to be right


@EXAMPLES
@given(payload=raw_payloads)
def test_genuine_signatures_over_non_json_raise_only_bad_data(payload: bytes) -> None:
    token = signed_raw(payload)
    try:
        value = CODEC.verify(Purpose.LINK, token)
    except BadData:
        return
    # Bytes that happen to be JSON decode to that JSON, nothing else.
    if payload.startswith(b"."):
        text = zlib.decompress(base64_decode(payload[1:]))
    else:
        text = base64_decode(payload)
    assert json.dumps(value) == json.dumps(json.loads(text))
