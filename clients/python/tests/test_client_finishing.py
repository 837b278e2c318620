"""Finishing the flow (API.md): exchange, typed codes, resend, as the contract defines them.

A server that does not have one of these routes yet answers it 404 (or 405
where another route owns the path: ``GET /v1/redemptions/{id}`` for
``/v1/redemptions/exchange``), which the client raises like any other such
answer; such a test checks exactly that, and is skipped with the reason
until the route is in the server's OpenAPI document.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from action_links_client import ActionLinksError, Client, NotFound, RateLimited

from tests.support.links import outcome_of
from tests.support.shop_service import Shop, subject, tampered

pytestmark = pytest.mark.slow  # the session's shop: a real service process


def require_route(shop: Shop, path: str, call: Callable[[], object]) -> None:
    """Skip when the server's OpenAPI document lacks ``path``, once ``call`` was refused."""
    paths = httpx.get(f"{shop.base_url}/openapi.json", timeout=10).json()["paths"]
    if path not in paths:
        with pytest.raises(ActionLinksError) as refused:
            call()
        assert refused.value.status in (404, 405)
        assert isinstance(refused.value, NotFound) == (refused.value.status == 404)
        pytest.skip(f"this server has no {path} yet (raised {refused.value})")


def query(response: httpx.Response) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def test_exchange_gives_the_redemption_once(shop: Shop, client: Client) -> None:
    require_route(shop, "/v1/redemptions/exchange", lambda: client.exchange("code"))
    who = subject()
    link = client.mint("activate", subject=who)
    redirected = shop.follow(link)
    assert outcome_of(redirected) == "success"
    found = query(redirected)
    redemption = client.exchange(found["code"])
    assert (redemption.id, redemption.link_id) == (found["redemption_id"], link.id)
    assert (redemption.subject, redemption.via, redemption.use) == (who, "link", 1)
    assert redemption.exchanged_at is not None
    with pytest.raises(ActionLinksError) as again:
        client.exchange(found["code"])
    assert (again.value.status, again.value.code) == (409, "code_used")
    for not_a_code in (tampered(found["code"]), link.token):
        with pytest.raises(NotFound):
            client.exchange(not_a_code)


def test_a_typed_code_redeems_like_the_link(shop: Shop, client: Client) -> None:
    require_route(shop, "/v1/links/redeem", lambda: client.redeem_code("token", "123456"))
    who = subject()
    link = client.mint("activate", subject=who, code=True)
    assert link.code is not None
    assert len(link.code) == 6
    assert link.code.isdigit()
    wrong = f"{(int(link.code) + 1) % 1_000_000:06d}"
    with pytest.raises(ActionLinksError) as mistyped:
        client.redeem_code(link.token, wrong)
    assert (mistyped.value.status, mistyped.value.code) == (422, "wrong_code")
    assert mistyped.value.problem["attempts_left"] == 4
    redemption = client.redeem_code(link.token, link.code)
    assert (redemption.link_id, redemption.subject, redemption.via) == (link.id, who, "code")
    assert client.status(link.id).uses == 1
    with pytest.raises(ActionLinksError) as used:
        client.redeem_code(link.token, link.code)
    assert (used.value.status, used.value.code) == (409, "used")


def test_typed_codes_lock_after_five_wrong_ones(shop: Shop, client: Client) -> None:
    require_route(shop, "/v1/links/redeem", lambda: client.redeem_code("token", "123456"))
    link = client.mint("activate", code=True)
    assert link.code is not None
    wrong = f"{(int(link.code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        with pytest.raises(ActionLinksError):
            client.redeem_code(link.token, wrong)
    with pytest.raises(RateLimited) as locked:
        client.redeem_code(link.token, link.code)
    assert (locked.value.status, locked.value.code) == (429, "code_locked")
    assert outcome_of(shop.follow(link)) == "success"  # the link's URL still works
    with pytest.raises(ActionLinksError) as not_enabled:
        client.redeem_code(client.mint("activate", code=False).token, "123456")
    assert (not_enabled.value.status, not_enabled.value.code) == (422, "code_not_enabled")


def test_resend_mints_a_new_link_like_the_expired_one(shop: Shop, client: Client) -> None:
    require_route(shop, "/v1/links/resend", lambda: client.resend("hint"))
    who = subject()
    expired = client.mint("activate", subject=who, data={"cart": 3}, expires_in=1)
    while datetime.now(UTC).timestamp() < expired.expires_at.timestamp() + 1.1:
        time.sleep(0.1)  # valid through its expires_at second
    redirected = shop.follow(expired)
    assert outcome_of(redirected) == "expired"
    hint = query(redirected)["resend"]
    fresh = client.resend(hint)
    assert fresh.id != expired.id
    assert (fresh.action, fresh.subject, fresh.max_uses) == ("activate", who, 1)
    inspected = client.inspect(fresh.token)
    assert inspected.link is not None
    assert inspected.link.data == {"cart": 3}
    assert outcome_of(shop.follow(fresh)) == "success"
    with pytest.raises(NotFound):
        client.resend(tampered(hint))
