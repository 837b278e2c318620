"""Following links from tests: what the person would have been told."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from service.tokens import LINK_ID_BYTES, LinkClaims


def random_link_id() -> str:
    """A link id no codec minted (random, untagged): for stores, which take any id, and for
    ids the API must not know."""
    return secrets.token_urlsafe(LINK_ID_BYTES)


def link_claims(client_id: str = "shop", **fields: Any) -> LinkClaims:
    """A single-use link of ``client_id`` issued now, as a store sees it (``fields`` replace
    any of its claims)."""
    now_us = time.time_ns() // 1000
    claims: dict[str, Any] = {
        "link_id": random_link_id(),
        "client_id": client_id,
        "action": "activate",
        "subject": "42",
        "data": {"k": ["v", 1]},
        "issued_at_us": now_us,
        "expires_at": now_us // 1_000_000 + 3600,
        "max_uses": 1,
    }
    claims.update(fields)
    return LinkClaims(**claims)


def outcome_of(response: httpx.Response) -> str:
    """``success`` or the ``error=`` of a redemption's 303."""
    assert response.status_code == 303, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return "success" if "redemption_id" in query else query["error"][0]


def redemption_id_of(response: httpx.Response) -> str:
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return query["redemption_id"][0]


async def redeem(http: httpx.AsyncClient, link: dict[str, Any]) -> str:
    """Follow a minted link once; ``success`` or the error it redirected with."""
    return outcome_of(await http.get("/r/" + link["token"]))
