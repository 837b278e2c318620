"""The token format. No other module knows how a link is encoded.

A link token is an itsdangerous URL-safe serialization (HMAC-SHA256 with an
HMAC-derived key, one salt per purpose) of a compact JSON object carrying
everything redemption needs. Keys are a list, oldest first: new tokens are
signed with the newest, tokens signed with any listed key verify.

Besides links, the module owns the service's other signed strings: the
confirmation nonce of a confirm page, the audit log's cursor, the *exchange
code* of a success redirect, and the 6-digit *typed code* of a link (an HMAC
of the link id, not a token: it is checked against a link, never decoded).

Anything that is not a genuine token raises ``itsdangerous.BadData`` (or a
subclass): callers catch that one class and never see another exception.
Expiry is *not* an error here: an expired link is still trustworthy, and its
failure URL may be used. ``LinkClaims.is_expired`` answers it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from itsdangerous import BadData, BadPayload, BadSignature, Serializer, Signer, URLSafeSerializer
from itsdangerous.encoding import want_bytes
from itsdangerous.signer import HMACAlgorithm

__all__ = [
    "BadData",
    "ConfirmClaims",
    "ExchangeClaims",
    "LinkClaims",
    "Purpose",
    "ResendClaims",
    "TokenCodec",
    "issue_time",
    "link_claim_key",
    "link_wire",
]

MAX_TOKEN_LENGTH = 16_384
# Payloads shorter than this are signed uncompressed. zlib shortens a typical link's
# payload (100–250 bytes of JSON) by 14–25 % for ~17 µs, half of what minting a link in
# a batch costs without it; a payload carrying more data shrinks by a third or more
# (bench/README.md, "Compression only where it pays").
COMPRESS_FROM_BYTES = 256
LINK_ID_BYTES = 12  # 96 bits from the CSPRNG, 16 URL-safe characters
LINK_ID_RANDOM_CHARS = 16
LINK_ID_TAG_BYTES = 3  # 24 bits, 4 URL-safe characters: a link id is 20 characters
LINK_ID_TAG_CHARS = 4
LINK_ID_LENGTH = LINK_ID_RANDOM_CHARS + LINK_ID_TAG_CHARS
LINK_ID_REGEX = f"[A-Za-z0-9_-]{{{LINK_ID_LENGTH}}}"  # what every link id looks like
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LINK_ID_SALT = b"action-links/link-id/v1"
TYPED_CODE_SALT = b"action-links/typed-code/v1"
TYPED_CODE_DIGITS = 6
TYPED_CODE = re.compile(f"[0-9]{{{TYPED_CODE_DIGITS}}}")


class Purpose(StrEnum):
    """One salt per purpose, so a token of one kind never verifies as another."""

    LINK = "action-links/link/v1"
    CONFIRM = "action-links/confirm/v1"
    CURSOR = "action-links/cursor/v1"
    EXCHANGE = "action-links/exchange/v1"
    RESEND = "action-links/resend/v1"


def link_claim_key(link_id: str) -> str:
    """The key of a link's own use counter in ``claims`` (once-key budgets use ``o:``)."""
    return f"l:{link_id}"


def issue_time(issued_at_us: int) -> datetime:
    """A link's issue time from its microseconds since the epoch, as ``LinkClaims.issued_at``."""
    return EPOCH + timedelta(microseconds=issued_at_us)


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a link token says. ``issued_at_us`` is microseconds since the epoch."""

    link_id: str
    client_id: str
    action: str
    subject: str | None
    data: Any
    issued_at_us: int
    expires_at: int
    max_uses: int | None
    once_key: str | None = None
    success_url: str | None = None
    failure_url: str | None = None
    code: bool = False  # whether the link has a typed code (``TokenCodec.typed_code``)

    @property
    def issued_at(self) -> datetime:
        """Exact to the microsecond (no float on the way): revocations compare against it."""
        return issue_time(self.issued_at_us)

    @property
    def expires_at_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, UTC)

    def is_expired(self, now: datetime) -> bool:
        """Valid up to and including the ``expires_at`` second."""
        return now.timestamp() > self.expires_at

    @property
    def claim_key(self) -> str:
        """The use counter this link draws on: its own, or its once key's."""
        return f"o:{self.once_key}" if self.once_key is not None else link_claim_key(self.link_id)

    def to_wire(self) -> dict[str, Any]:
        return link_wire(
            self.link_id,
            self.client_id,
            self.action,
            self.issued_at_us,
            self.expires_at,
            subject=self.subject,
            data=self.data,
            max_uses=self.max_uses,
            once_key=self.once_key,
            success_url=self.success_url,
            failure_url=self.failure_url,
            code=self.code,
        )

    @classmethod
    def from_wire(cls, wire: Any) -> LinkClaims:
        if not isinstance(wire, dict):
            raise BadPayload("link payload is not an object")
        try:
            link_id, client_id, action = wire["i"], wire["c"], wire["a"]
            issued_at_us, expires_at = wire["t"], wire["e"]
        except KeyError as exc:
            raise BadPayload(f"link payload lacks {exc}") from None
        # Every redemption reads one: the usual fields checked inline (as ``_str`` and
        # ``_int`` check them), the optional ones through the helpers only when present.
        if not (isinstance(link_id, str) and isinstance(client_id, str)):
            raise BadPayload("expected a string")
        if not isinstance(action, str):
            raise BadPayload("expected a string")
        if type(issued_at_us) is not int or type(expires_at) is not int:
            _int(issued_at_us), _int(expires_at)  # an int subclass is fine, a bool is not
        get = wire.get
        subject, max_uses = get("s"), get("m")
        once_key, success_url, failure_url, code = get("o"), get("su"), get("fu"), get("k")
        return cls(
            link_id,
            client_id,
            action,
            subject if subject is None or isinstance(subject, str) else _str(subject),
            get("d"),
            issued_at_us,
            expires_at,
            max_uses if max_uses is None or type(max_uses) is int else _int(max_uses),
            None if once_key is None else _str(once_key),
            None if success_url is None else _str(success_url),
            None if failure_url is None else _str(failure_url),
            code is not None and _flag(code),
        )


def link_wire(
    link_id: str,
    client_id: str,
    action: str,
    issued_at_us: int,
    expires_at: int,
    *,
    subject: str | None,
    data: Any,
    max_uses: int | None,
    once_key: str | None,
    success_url: str | None,
    failure_url: str | None,
    code: bool,
) -> dict[str, Any]:
    """What a link token carries (``LinkClaims.to_wire``), from the fields themselves:
    minting signs links without building a ``LinkClaims`` for each (bench/README.md)."""
    wire: dict[str, Any] = {
        "i": link_id,
        "c": client_id,
        "a": action,
        "t": issued_at_us,
        "e": expires_at,
    }
    # The optional fields only when set, in this order (one test per field: minted often).
    if subject is not None:
        wire["s"] = subject
    if data is not None:
        wire["d"] = data
    if max_uses is not None:
        wire["m"] = max_uses
    if once_key is not None:
        wire["o"] = once_key
    if success_url is not None:
        wire["su"] = success_url
    if failure_url is not None:
        wire["fu"] = failure_url
    if code:
        wire["k"] = 1  # absent when false: tokens without a typed code are unchanged
    return wire


@dataclass(frozen=True, slots=True)
class ConfirmClaims:
    """What a confirmation nonce says: which link's page issued it, and when (epoch seconds).

    The nonce is the hidden field of a confirmation page's form. It is signed
    with its own salt, so neither a link token nor any other token verifies
    as one, and it names the link, so a nonce of one link is no good for
    another. How old a nonce may be is the caller's rule (``service.confirm``).
    """

    link_id: str
    issued_at: int

    def to_wire(self) -> dict[str, Any]:
        return {"l": self.link_id, "t": self.issued_at}

    @classmethod
    def from_wire(cls, wire: Any) -> ConfirmClaims:
        if not isinstance(wire, dict):
            raise BadPayload("confirm payload is not an object")
        try:
            return cls(link_id=_str(wire["l"]), issued_at=_int(wire["t"]))
        except KeyError as exc:
            raise BadPayload(f"confirm payload lacks {exc}") from None


@dataclass(frozen=True, slots=True)
class ExchangeClaims:
    """What an exchange code says: which client's redemption it trades for, issued when.

    The code rides on a success redirect (``code=``); the caller's backend
    trades it, server to server, for the redemption (``service.exchange``).
    Signing it writes nothing; whether it was traded already, and whether it
    is still young enough, is the redemption row's to say (``exchanged_at``,
    ``redeemed_at``). Its own salt keeps a link token, a nonce or a cursor
    from ever verifying as one.
    """

    client_id: str
    redemption_id: str
    issued_at: int  # epoch seconds

    def to_wire(self) -> list[Any]:
        return [self.client_id, self.redemption_id, self.issued_at]

    @classmethod
    def from_wire(cls, wire: Any) -> ExchangeClaims:
        if not isinstance(wire, list) or len(wire) != 3:
            raise BadPayload("exchange payload is not a list of three")
        client_id, redemption_id, issued_at = wire
        return cls(_str(client_id), _str(redemption_id), _int(issued_at))


@dataclass(frozen=True, slots=True)
class ResendClaims:
    """What a resend hint says: the expired link, whole, and when the hint was issued.

    The hint rides on an ``error=expired`` failure redirect (``resend=``); the
    caller's backend sends it back for a replacement link (``service.resend``).
    It carries the link's claims, so the replacement needs no stored state; the
    claims name the client, which is what binds the hint to it. Its own salt
    keeps a link token from verifying as a hint: an expired link's token alone
    buys no new link.
    """

    link: LinkClaims
    issued_at: int  # epoch seconds

    def to_wire(self) -> list[Any]:
        return [self.link.to_wire(), self.issued_at]

    @classmethod
    def from_wire(cls, wire: Any) -> ResendClaims:
        if not isinstance(wire, list) or len(wire) != 2:
            raise BadPayload("resend payload is not a list of two")
        return cls(LinkClaims.from_wire(wire[0]), _int(wire[1]))


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise BadPayload("expected a string")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadPayload("expected an integer")
    return value


def _flag(value: Any) -> bool:
    if value is None:
        return False
    if type(value) is not int or value != 1:
        raise BadPayload("expected the flag 1")
    return True


SIGNATURE_LENGTH = 43  # a 32-byte HMAC-SHA256 in unpadded base64
# The URL-safe alphabet only (Python's decoder also takes "+" and "/" for "-" and
# "_", and skips other characters), and a last character whose two unused low
# bits are clear: the one spelling of a 32-byte HMAC that we issue.
_CANONICAL_SIGNATURE = re.compile(f"[A-Za-z0-9_-]{{{SIGNATURE_LENGTH - 1}}}[AEIMQUYcgkosw048]")


def _require_canonical_signature(token: str) -> None:
    """Refuse any spelling of a signature other than the one we issued.

    Base64 decoding is lenient: several strings decode to the same 32 bytes.
    Each of them would verify, so a one-character change to a genuine token
    could still redeem it; only the canonical spelling is accepted.
    """
    _, _, signature = token.rpartition(".")
    if _CANONICAL_SIGNATURE.fullmatch(signature) is None:
        raise BadSignature("not a canonical HMAC-SHA256 signature")


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))
SHA256_BLOCK = 64


def _b64(raw: bytes) -> bytes:
    """URL-safe base64 without padding (itsdangerous' ``base64_encode``), in three C calls
    instead of through ``base64``'s two Python layers: it runs four times per minted link."""
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=")


class _KeyedSha256:
    """HMAC-SHA256 (RFC 2104) under one key, its two padded key blocks hashed once.

    Each MAC copies the two SHA-256 states and hashes the message and the inner
    digest: the same bytes as ``hmac.digest``, without keying OpenSSL's HMAC
    (or copying and freeing an ``hmac.HMAC`` through its Python layer) for each
    of the two MACs of every minted link (bench/README.md).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_INNER_PAD))
        self._outer = hashlib.sha256(block.translate(_OUTER_PAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class _HmacSha256(HMACAlgorithm):
    """HMAC-SHA256 in one call to ``hmac.digest``: the same bytes as itsdangerous'
    algorithm, without building an HMAC object per signature (OpenSSL's one-shot
    path). Verification still compares in constant time (``verify_signature``).
    """

    def __init__(self) -> None:
        super().__init__(hashlib.sha256)

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, "sha256")


class _Signer(Signer):
    """itsdangerous' signer, deriving each key once instead of on every call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived = {key: Signer.derive_key(self, key) for key in self.secret_keys}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        derived = self._derived.get(key)
        return derived if derived is not None else Signer.derive_key(self, key)


class _Serializer(URLSafeSerializer):
    """itsdangerous' URL-safe serializer without the costs it pays on every call.

    The stock one builds a new signer per ``dumps`` and ``loads``, which
    re-derives every key with an extra HMAC, and compresses with zlib's
    defaults, whose setup (a 64 KiB hash table cleared per call) costs more
    than compressing a link-sized payload. Here each salt's signer is built
    once with its keys derived once, a payload is compressed only from
    ``COMPRESS_FROM_BYTES`` on, and zlib then uses a 512-byte window and a
    small hash table. The tokens are the same format: stock itsdangerous reads
    them, and the codec reads its tokens (bench/README.md).

    Signing (``dumps``) goes further, as it runs once per minted link: the
    payload is encoded by orjson, and the newest key's HMAC is keyed once
    (``_KeyedSha256``), instead of passing through the signer's layers.
    """

    default_signer = _Signer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signers: dict[str | bytes | None, Signer] = {}
        self._mac = _KeyedSha256(self.make_signer(self.salt).derive_key())

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        signer = self._signers.get(salt)
        if signer is None:
            signer = self._signers[salt] = super().make_signer(salt)
        return signer

    def _json(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj)
        except orjson.JSONEncodeError:  # integers beyond 64 bits, lone surrogates, …
            return Serializer.dump_payload(self, obj)  # as itsdangerous writes them

    def dump_payload(self, obj: Any) -> bytes:
        json = self._json(obj)
        if len(json) < COMPRESS_FROM_BYTES:
            return _b64(json)
        compressor = zlib.compressobj(6, zlib.DEFLATED, 9, 1)  # 512-byte window, memLevel 1
        compressed = compressor.compress(json) + compressor.flush()
        if len(compressed) < len(json) - 1:
            return b"." + _b64(compressed)
        return _b64(json)

    def dumps(self, obj: Any, salt: str | bytes | None = None) -> str:
        """What ``Signer.sign`` makes of the payload: ``payload.signature``, where the
        signature is the payload's HMAC-SHA256 under the newest derived key."""
        if salt is not None and salt != self.salt:
            return super().dumps(obj, salt)
        return self._signed(self.dump_payload(obj))

    def _signed(self, payload: bytes) -> str:
        return (payload + b"." + _b64(self._mac.digest(payload))).decode("ascii")


def _link_id_tag(keyed: _KeyedSha256, client_id: str, random_part: str) -> str:
    """``keyed``: the HMAC of a link-id key, keyed once (``_KeyedSha256``)."""
    message = f"{client_id}\x00{random_part}".encode("utf-8", "surrogatepass")
    return _b64(keyed.digest(message)[:LINK_ID_TAG_BYTES]).decode("ascii")


def _typed_code(key: bytes, client_id: str, link_id: str) -> str:
    """Six decimal digits from 64 bits of HMAC-SHA256 (the modulo bias is below 2**-44)."""
    message = f"{client_id}\x00{link_id}".encode("utf-8", "surrogatepass")
    digest = hmac.digest(key, message, "sha256")
    number = int.from_bytes(digest[:8], "big") % 10**TYPED_CODE_DIGITS
    return f"{number:0{TYPED_CODE_DIGITS}d}"


def _unsign_keys(serializer: _Serializer) -> tuple[bytes, ...]:
    """The derived keys a token of ``serializer``'s salt may be signed with, newest first."""
    signer = serializer.make_signer(serializer.salt)
    return tuple(signer.derive_key(key) for key in reversed(signer.secret_keys))


def _loads(keys: tuple[bytes, ...], token: str) -> Any:
    """What ``_Serializer.loads`` answers for ``token`` (its signature found canonical),
    without itsdangerous' layers, as it runs on every redemption: the same HMAC under
    each key (newest first, constant-time comparison), then the payload as itsdangerous
    reads it (base64, zlib after a leading ".", UTF-8 JSON). BadSignature or BadPayload
    otherwise (``tests/test_tokens.py`` holds it to itsdangerous' answers)."""
    value, sep, signature = token.encode("ascii").rpartition(b".")
    if not sep:
        raise BadSignature("no '.' found in the token")
    expected = base64.urlsafe_b64decode(signature + b"=")  # canonical: 43 characters
    if not any(hmac.compare_digest(expected, hmac.digest(k, value, "sha256")) for k in keys):
        raise BadSignature("signature does not match", payload=value)
    compressed = value.startswith(b".")
    payload = value[1:] if compressed else value
    try:
        data = base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))
        if compressed:
            data = zlib.decompress(data)
        return json.loads(data.decode("utf-8"))
    except Exception as exc:
        raise BadPayload("undecodable token payload") from exc


class TokenCodec:
    """Signs and verifies every token the service hands out."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._serializers = {
            purpose: _Serializer(
                keys,
                salt=purpose.value,
                signer_kwargs={
                    "digest_method": hashlib.sha256,
                    "key_derivation": "hmac",
                    "algorithm": _HmacSha256(),
                },
            )
            for purpose in Purpose
        }
        self._keys = {purpose: _unsign_keys(self._serializers[purpose]) for purpose in Purpose}
        self._link_serializer = self._serializers[Purpose.LINK]
        # One keyed HMAC per listed key (oldest first): new ids are tagged under the
        # newest, and an id is checked under each.
        self._link_id_macs = [
            _KeyedSha256(hmac.digest(key, LINK_ID_SALT, "sha256")) for key in keys
        ]
        self._typed_code_keys = [
            hmac.new(key, TYPED_CODE_SALT, hashlib.sha256).digest() for key in keys
        ]

    def mint_link_id(self, client_id: str) -> str:
        """A new link id: 96 random bits, then a short tag binding it to ``client_id``.

        Links are not stored, so the tag is how the API tells a client's own
        link ids (answered, even when never redeemed) from unknown ids and
        other clients' ids (404). It is no secret and no capability: the
        token's signature is what makes a link redeemable.
        """
        return self.mint_link_ids(client_id, 1)[0]

    def mint_link_ids(self, client_id: str, count: int) -> list[str]:
        """``count`` new link ids (``mint_link_id``), their random parts read from the
        CSPRNG in one call, each tagged as ``owns_link_id`` checks."""
        # Whole base64 groups (12 and 3 bytes): the encoding of the concatenation is the
        # concatenation of the encodings, so each is encoded once for all the ids.
        random_parts = _b64(os.urandom(LINK_ID_BYTES * count))
        prefix = f"{client_id}\x00".encode("utf-8", "surrogatepass")
        tag = self._link_id_macs[-1].digest
        tags = b"".join(
            tag(prefix + random_parts[start : start + LINK_ID_RANDOM_CHARS])[:LINK_ID_TAG_BYTES]
            for start in range(0, len(random_parts), LINK_ID_RANDOM_CHARS)
        )
        random_text, tag_text = random_parts.decode("ascii"), _b64(tags).decode("ascii")
        return [
            random_text[n * LINK_ID_RANDOM_CHARS : (n + 1) * LINK_ID_RANDOM_CHARS]
            + tag_text[n * LINK_ID_TAG_CHARS : (n + 1) * LINK_ID_TAG_CHARS]
            for n in range(count)
        ]

    def owns_link_id(self, client_id: str, link_id: str) -> bool:
        """Whether ``link_id`` was minted for ``client_id`` under one of the listed keys."""
        if len(link_id) != LINK_ID_LENGTH or not link_id.isascii():
            return False
        random_part, tag = link_id[:LINK_ID_RANDOM_CHARS], link_id[LINK_ID_RANDOM_CHARS:]
        return any(
            hmac.compare_digest(_link_id_tag(mac, client_id, random_part), tag)
            for mac in self._link_id_macs
        )

    def typed_code(self, link: LinkClaims) -> str:
        """The 6-digit code a person may type instead of following ``link``.

        Derived from the client and link id with the newest key, so minting it
        writes nothing and any process can check it.
        """
        return self.typed_code_of(link.client_id, link.link_id)

    def typed_code_of(self, client_id: str, link_id: str) -> str:
        """``typed_code`` of the link ``link_id`` of ``client_id``."""
        return _typed_code(self._typed_code_keys[-1], client_id, link_id)

    def typed_code_matches(self, link: LinkClaims, code: str) -> bool:
        """Whether ``code`` is ``link``'s typed code under any listed key, in constant time.

        Every key is tried (no early exit), so a link minted before a key
        rotation keeps its code, and the time taken says nothing about which
        key, if any, matched.
        """
        if not isinstance(code, str) or TYPED_CODE.fullmatch(code) is None:
            return False
        wanted = code.encode("ascii")
        matches = [
            hmac.compare_digest(_typed_code(key, link.client_id, link.link_id).encode(), wanted)
            for key in self._typed_code_keys
        ]
        return any(matches)

    def sign(self, purpose: Purpose, payload: Any) -> str:
        return self._serializers[purpose].dumps(payload)

    def verify(self, purpose: Purpose, token: str) -> Any:
        """The payload of a genuine token of this purpose; ``BadData`` otherwise."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise BadSignature("not a token")
        if not token.isascii():
            raise BadSignature("not a token")
        _require_canonical_signature(token)
        try:
            return _loads(self._keys[purpose], token)
        except BadData:
            raise
        except Exception as exc:  # the contract: only BadData escapes
            raise BadPayload("undecodable token") from exc

    def sign_link(self, claims: LinkClaims) -> str:
        return self.sign(Purpose.LINK, claims.to_wire())

    def sign_link_wire(self, wire: dict[str, Any]) -> str:
        """The token of a link whose claims are ``wire`` (``link_wire``)."""
        return self._link_serializer.dumps(wire)

    def verify_link(self, token: str) -> LinkClaims:
        return LinkClaims.from_wire(self.verify(Purpose.LINK, token))

    def sign_confirm(self, claims: ConfirmClaims) -> str:
        return self.sign(Purpose.CONFIRM, claims.to_wire())

    def verify_confirm(self, nonce: str) -> ConfirmClaims:
        return ConfirmClaims.from_wire(self.verify(Purpose.CONFIRM, nonce))

    def sign_exchange(self, claims: ExchangeClaims) -> str:
        """A stock itsdangerous token of the exchange salt: two ids and a number, too short
        to be compressed (``COMPRESS_FROM_BYTES``)."""
        return self.sign(Purpose.EXCHANGE, claims.to_wire())

    def verify_exchange(self, code: str) -> ExchangeClaims:
        """The claims of a genuine exchange code; ``BadData`` for anything else,
        link tokens, nonces and cursors included (another salt)."""
        return ExchangeClaims.from_wire(self.verify(Purpose.EXCHANGE, code))

    def sign_resend(self, claims: ResendClaims) -> str:
        return self.sign(Purpose.RESEND, claims.to_wire())

    def verify_resend(self, hint: str) -> ResendClaims:
        """The claims of a genuine resend hint; ``BadData`` for anything else (another salt)."""
        return ResendClaims.from_wire(self.verify(Purpose.RESEND, hint))
