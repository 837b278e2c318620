"""Minting: turn a request into a signed link. Pure computation, no I/O."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from service.errors import (
    ApiError,
    PayloadTooLarge,
    TtlTooLong,
    UnknownAction,
    ValidationFailed,
)
from service.redirects import require_allowed
from service.registry import ClientConfig
from service.schemas import LinkRequest, LinkResponse
from service.tokens import LinkClaims, TokenCodec

MAX_DATA_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Minter:
    codec: TokenCodec
    public_base_url: str

    def mint(self, client: ClientConfig, request: LinkRequest) -> LinkResponse:
        action = client.action(request.action)
        if action is None or not action.enabled:
            raise UnknownAction(f"client '{client.id}' has no action '{request.action}'")
        if request.data is not None:
            size = len(json.dumps(request.data, separators=(",", ":")).encode())
            if size > MAX_DATA_BYTES:
                raise PayloadTooLarge(f"data is {size} bytes serialized; the limit is 4096")
        expires_in = request.expires_in if request.expires_in is not None else action.ttl
        if expires_in > action.max_ttl:
            raise TtlTooLong(
                f"expires_in {expires_in} exceeds max_ttl {action.max_ttl} "
                f"of action '{action.name}'"
            )
        require_allowed(
            client.id,
            client.allowed_redirects,
            success_url=request.success_url,
            failure_url=request.failure_url,
        )
        max_uses = request.max_uses if request.max_uses is not None else action.max_uses
        now_us = time.time_ns() // 1000
        claims = LinkClaims(
            link_id=self.codec.mint_link_id(client.id),
            client_id=client.id,
            action=action.name,
            subject=request.subject,
            data=request.data,
            issued_at_us=now_us,
            expires_at=now_us // 1_000_000 + expires_in,
            max_uses=max_uses,
            once_key=request.once_key,
            success_url=request.success_url,
            failure_url=request.failure_url,
            code=request.code if request.code is not None else action.code,
        )
        token = self.codec.sign_link(claims)
        return LinkResponse(
            id=claims.link_id,
            url=f"{self.public_base_url}/r/{token}",
            token=token,
            action=action.name,
            subject=request.subject,
            expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
            max_uses=max_uses,
            code=self.codec.typed_code(claims) if claims.code else None,
        )

    def mint_batch(self, client: ClientConfig, items: list[dict[str, Any]]) -> list[LinkResponse]:
        """All or nothing: every item is checked before any is returned."""
        links: list[LinkResponse] = []
        errors: list[dict[str, Any]] = []
        first: ApiError | None = None
        for index, item in enumerate(items):
            try:
                links.append(self.mint(client, LinkRequest.model_validate(item)))
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
        if first is not None:
            failed = sorted({e["index"] for e in errors})
            raise BatchInvalid(first.code, f"{len(failed)} item(s) invalid: {failed}", errors)
        return links


class BatchInvalid(ValidationFailed):
    """A batch with bad items answers 422, with the first bad item's code."""

    def __init__(self, code: str, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail, errors=errors)
        self.code = code
