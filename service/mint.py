"""Minting: turn a request into a signed link. Pure computation, no I/O, with one exception.

``supersede`` (API.md, "Finishing the flow") is the one mint that writes: a
subject revocation for the link's client, subject and action at the new
link's own issue time (``Store.revoke_subject``, one statement). The claim
refuses links issued *strictly before* a revocation, so every earlier link
of that subject and action is dead while the new one, issued at exactly that
microsecond, and every later one work. The link is signed before the write:
if the write fails (503), no link is handed out, though earlier links may
already be revoked; minting again is the remedy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from service.errors import (
    ApiError,
    PayloadTooLarge,
    TtlTooLong,
    UnknownAction,
    ValidationFailed,
)
from service.lifecycle import revocation_expiry
from service.redirects import require_allowed
from service.registry import ClientConfig
from service.schemas import SUPERSEDE_NEEDS_SUBJECT, LinkFields, LinkRequest
from service.store import Store
from service.tokens import EPOCH, TokenCodec, issue_time, link_wire

MAX_DATA_BYTES = 4096
MAX_ESCAPE_GROWTH = 6
ONE_CLICK_BODY = "List-Unsubscribe=One-Click"
"""RFC 8058: what a mail provider's POST carries, and what ``List-Unsubscribe-Post`` says."""


# A batch's items validated in one call, as dicts (no model per item); only a batch
# with a bad item is validated again item by item as ``LinkRequest``s, so that each
# error names its item as it always has.
ITEMS = TypeAdapter(list[LinkFields])


@dataclass(frozen=True, slots=True)
class Signed:
    """Links made from requests, in order: the answers to the caller (the fields of
    ``schemas.LinkResponse``, as ``api.links`` encodes them), and for each (subject,
    action) that a link supersedes, the issue time (µs) of the newest such link."""

    answers: list[dict[str, Any]]
    superseding: dict[tuple[str, str], int]


@dataclass(frozen=True, slots=True)
class Minter:
    codec: TokenCodec
    public_base_url: str
    store: Store

    async def mint(
        self, client: ClientConfig, request: LinkRequest, *, exact_max_uses: bool = False
    ) -> dict[str, Any]:
        """The answer for one link. ``exact_max_uses``: a null ``max_uses`` means unlimited,
        not the action's default (a replacement link keeps the old one's limit,
        ``service.resend``)."""
        signed = self.sign(client, [dict(request)], exact_max_uses=exact_max_uses)
        await self._supersede(client.id, signed.superseding)
        return signed.answers[0]

    async def mint_batch(
        self, client: ClientConfig, items: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """All or nothing: every item is checked before any is returned (or written)."""
        signed = self.sign_batch(client, items)
        await self._supersede(client.id, signed.superseding)
        return signed.answers

    async def _supersede(self, client_id: str, superseding: dict[tuple[str, str], int]) -> None:
        """One statement per (subject, action) superseded, at its newest link's issue time
        (an earlier link of the batch is superseded by a later one like any other)."""
        for (subject, action), issued_at_us in superseding.items():
            issued_at = issue_time(issued_at_us)
            await self.store.revoke_subject(
                client_id, subject, action, issued_at, revocation_expiry(issued_at)
            )

    def sign(
        self,
        client: ClientConfig,
        requests: Sequence[Mapping[str, Any]],
        *,
        exact_max_uses: bool = False,
    ) -> Signed:
        """The links for ``requests`` (the fields of validated ``LinkRequest``s, those
        left out taking their defaults), or the first bad one's problem; writes nothing.

        One loop for one link or a batch, with what every link shares looked up
        once: it runs for every minted link, and each link is built from its
        fields (no ``LinkClaims``, no per-link dataclass), its expiry time made
        once per second of expiry, its id's randomness read once per call.
        """
        codec = self.codec
        client_id = client.id
        actions = client.actions
        link_ids = codec.mint_link_ids(client_id, len(requests))
        sign_link = codec.sign_link_wire
        link_base = f"{self.public_base_url}/r/"
        answers: list[dict[str, Any]] = []
        superseding: dict[tuple[str, str], int] = {}
        expiry_second, expiry = -1, EPOCH
        for request, link_id in zip(requests, link_ids, strict=True):
            field = request.get
            action = actions.get(request["action"])
            if action is None or not action.enabled:
                raise UnknownAction(f"client '{client_id}' has no action '{request['action']}'")
            data = field("data")
            if data is not None:
                require_small(data)
            expires_in = field("expires_in")
            if expires_in is None:
                expires_in = action.ttl
            if expires_in > action.max_ttl:
                raise TtlTooLong(
                    f"expires_in {expires_in} exceeds max_ttl {action.max_ttl} "
                    f"of action '{action.name}'"
                )
            success_url, failure_url = field("success_url"), field("failure_url")
            if success_url is not None or failure_url is not None:
                require_allowed(
                    client_id,
                    client.allowed_redirects,
                    success_url=success_url,
                    failure_url=failure_url,
                )
            max_uses = field("max_uses")
            if max_uses is None and not exact_max_uses:
                max_uses = action.max_uses
            code = field("code")
            if code is None:
                code = action.code
            subject = field("subject")
            now_us = time.time_ns() // 1000
            expires_at = now_us // 1_000_000 + expires_in
            token = sign_link(
                link_wire(
                    link_id,
                    client_id,
                    action.name,
                    now_us,
                    expires_at,
                    subject=subject,
                    data=data,
                    max_uses=max_uses,
                    once_key=field("once_key"),
                    success_url=success_url,
                    failure_url=failure_url,
                    code=code,
                )
            )
            if expires_at != expiry_second:
                expiry_second, expiry = expires_at, datetime.fromtimestamp(expires_at, UTC)
            url = link_base + token
            # schemas.LinkResponse's fields; code and headers only when they apply (LINK_EXTRAS).
            answer: dict[str, Any] = {
                "id": link_id,
                "url": url,
                "token": token,
                "action": action.name,
                "subject": subject,
                "expires_at": expiry,
                "max_uses": max_uses,
            }
            if code:
                answer["code"] = codec.typed_code_of(client_id, link_id)
            if action.one_click:
                answer["headers"] = one_click_headers(url)
            answers.append(answer)
            if field("supersede"):
                if subject is None:  # LinkRequest refuses it: so does a batch (LinkFields)
                    raise ValidationFailed(SUPERSEDE_NEEDS_SUBJECT, errors=[])
                superseding[(subject, action.name)] = now_us  # minted in order: the newest
        return Signed(answers, superseding)

    def sign_batch(self, client: ClientConfig, items: list[dict[str, Any]]) -> Signed:
        """Every item signed, or ``BatchInvalid`` naming each bad item's index."""
        try:
            requests = ITEMS.validate_python(items)
        except ValidationError:
            return self._sign_each(client, items)
        try:
            return self.sign(client, requests)
        except ApiError:
            return self._sign_each(client, items)

    def _sign_each(self, client: ClientConfig, items: list[dict[str, Any]]) -> Signed:
        """``sign_batch`` for a batch with a bad item: every item on its own, so that every
        bad item is named with all its errors."""
        links = Signed([], {})
        errors: list[dict[str, Any]] = []
        first: ApiError | None = None
        for index, item in enumerate(items):
            try:
                link = self.sign(client, [dict(LinkRequest.model_validate(item))])
            except ValidationError as exc:
                for error in exc.errors(include_url=False, include_context=False):
                    errors.append(
                        {
                            "index": index,
                            "loc": ["links", index, *error["loc"]],
                            "msg": error["msg"],
                            "type": error["type"],
                            "code": "validation_error",
                        }
                    )
                first = first or ValidationFailed("invalid item", errors=[])
            except ApiError as exc:
                errors.append(
                    {"index": index, "loc": ["links", index], "msg": exc.detail, "code": exc.code}
                )
                first = first or exc
            else:
                links.answers.extend(link.answers)
                links.superseding.update(link.superseding)
        if first is not None:
            failed = sorted({e["index"] for e in errors})
            raise BatchInvalid(first.code, f"{len(failed)} item(s) invalid: {failed}", errors)
        return links


def require_small(data: Any) -> None:
    """``PayloadTooLarge`` for ``data`` above ``MAX_DATA_BYTES`` as the standard library
    writes it compactly (API.md). orjson's encoding is cheaper, and the standard library's
    is at most 6 times as long (``\\u007f`` for one byte, ``e+16`` for ``e16``): for data
    below a sixth of the limit in orjson's, that settles it."""
    try:
        if len(orjson.dumps(data)) * MAX_ESCAPE_GROWTH <= MAX_DATA_BYTES:
            return
    except orjson.JSONEncodeError:
        pass  # integers beyond 64 bits, …: measured as always
    size = len(json.dumps(data, separators=(",", ":")).encode())
    if size > MAX_DATA_BYTES:
        raise PayloadTooLarge(f"data is {size} bytes serialized; the limit is 4096")


def one_click_headers(url: str) -> dict[str, str]:
    """The mail headers of RFC 8058 one-click unsubscribe for the link at ``url``."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": ONE_CLICK_BODY}


class BatchInvalid(ValidationFailed):
    """A batch with bad items answers 422, with the first bad item's code."""

    def __init__(self, code: str, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail, errors=errors)
        self.code = code
