"""The blocking client's link and audit operations against a real service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from action_links_client import (
    ActionLinksError,
    Client,
    MintRequest,
    NotFound,
    Unauthorized,
)

from tests.conftest import SHOP_ORIGIN
from tests.support.links import outcome_of, redemption_id_of
from tests.support.shop_service import Shop, subject, tampered

pytestmark = pytest.mark.slow  # the session's shop: a real service process


def test_mint_without_options_takes_the_actions_defaults(shop: Shop, client: Client) -> None:
    link = client.mint("activate")
    assert link.action == "activate"
    assert link.subject is None
    assert link.max_uses == 1  # the action's default
    assert link.expires_at.tzinfo is not None
    expected = datetime.now(UTC) + timedelta(seconds=86_400)
    assert abs(link.expires_at - expected) < timedelta(seconds=30)
    assert link.url.endswith("/r/" + link.token)
    assert (link.code, dict(link.headers)) == (None, {})
    response = shop.follow(link)
    assert outcome_of(response) == "success"
    assert response.headers["location"].startswith(f"{SHOP_ORIGIN}/welcome?")


def test_mint_carries_what_the_caller_set(shop: Shop, client: Client) -> None:
    who = subject()
    link = client.mint(
        "activate",
        subject=who,
        data={"plan": "pro", "seats": [1, 2]},
        expires_in=120,
        max_uses=3,
        once_key=f"voucher:{who}",
        success_url=f"{SHOP_ORIGIN}/elsewhere",
    )
    assert (link.subject, link.max_uses) == (who, 3)
    assert abs(link.expires_at - (datetime.now(UTC) + timedelta(seconds=120))) < timedelta(
        seconds=30
    )
    inspected = client.inspect(link.token)
    assert inspected.link is not None
    assert inspected.link.data == {"plan": "pro", "seats": [1, 2]}
    assert shop.follow(link).headers["location"].startswith(f"{SHOP_ORIGIN}/elsewhere?")


def test_mint_batch_keeps_the_order_and_takes_requests_or_mappings(client: Client) -> None:
    who = subject()
    links = client.mint_batch(
        [
            MintRequest("activate", subject=who, max_uses=2),
            {"action": "hook", "subject": who},
            MintRequest("activate"),
        ]
    )
    assert [(link.action, link.subject, link.max_uses) for link in links] == [
        ("activate", who, 2),
        ("hook", who, None),
        ("activate", None, 1),
    ]
    assert len({link.id for link in links}) == 3


def test_a_bad_batch_item_is_named_by_its_index(client: Client) -> None:
    with pytest.raises(ActionLinksError) as caught:
        client.mint_batch([MintRequest("activate"), MintRequest("activate", max_uses=0)])
    error = caught.value
    assert (error.status, error.code) == (422, "validation_error")
    assert any(1 in entry["loc"] for entry in error.problem["errors"])
    assert type(error) is ActionLinksError


def test_status_counts_uses(shop: Shop, client: Client) -> None:
    link = client.mint("activate", max_uses=2)
    fresh = client.status(link.id)
    assert (fresh.id, fresh.uses, fresh.revoked, fresh.first_redeemed_at) == (
        link.id,
        0,
        False,
        None,
    )
    assert outcome_of(shop.follow(link)) == "success"
    used = client.status(link.id)
    assert used.uses == 1
    assert used.first_redeemed_at is not None
    assert used.first_redeemed_at.tzinfo is not None


def test_revoke_is_idempotent_and_the_link_redeems_to_revoked(shop: Shop, client: Client) -> None:
    link = client.mint("activate")
    client.revoke(link.id)
    client.revoke(link.id)
    assert client.status(link.id).revoked is True
    assert outcome_of(shop.follow(link)) == "revoked"


def test_revoke_subject_takes_back_earlier_links_only(shop: Shop, client: Client) -> None:
    who = subject()
    activate = client.mint("activate", subject=who)
    hook = client.mint("hook", subject=who)
    client.revoke_subject(who, action="hook")
    assert client.inspect(hook.token).reason == "revoked"
    assert client.inspect(activate.token).valid is True
    client.revoke_subject(who)
    assert client.inspect(activate.token).reason == "revoked"
    later = client.mint("activate", subject=who)
    assert outcome_of(shop.follow(later)) == "success"


def test_inspect_redeems_nothing(shop: Shop, client: Client) -> None:
    who = subject()
    link = client.mint("activate", subject=who, data={"n": 1})
    first = client.inspect(link.token)
    assert (first.valid, first.reason) == (True, None)
    assert first.link is not None
    assert (first.link.id, first.link.subject, first.link.uses) == (link.id, who, 0)
    assert client.inspect(link.token) == first
    assert outcome_of(shop.follow(link)) == "success"
    used = client.inspect(link.token)
    assert (used.valid, used.reason) == (False, "used")
    forged = client.inspect(tampered(link.token))
    assert (forged.valid, forged.reason, forged.link) == (False, "invalid", None)


def test_redemptions_follow_the_cursor_newest_first(shop: Shop, client: Client) -> None:
    who = subject()
    link = client.mint("activate", subject=who, max_uses=5)
    redirected = [redemption_id_of(shop.follow(link)) for _ in range(5)]
    listed = list(client.redemptions(subject=who, page_size=2))
    assert [r.id for r in listed] == redirected[::-1]
    assert [r.use for r in listed] == [5, 4, 3, 2, 1]
    assert {(r.link_id, r.subject, r.action) for r in listed} == {(link.id, who, "activate")}
    assert list(client.redemptions(link_id=link.id, action="hook")) == []
    one = client.redemption(redirected[0])
    assert one == listed[-1]
    assert (one.max_uses, one.delivery.status, one.redeemed_at.tzinfo is not None) == (
        5,
        "none",
        True,
    )


def test_redemptions_are_fetched_as_the_iterator_advances(shop: Shop, client: Client) -> None:
    who = subject()
    link = client.mint("activate", subject=who, max_uses=3)
    for _ in range(3):
        shop.follow(link)
    pages = client.redemptions(subject=who, page_size=1)
    assert next(pages).use == 3
    client.revoke(link.id)  # pages already fetched are not fetched again; the log stays
    assert [r.use for r in pages] == [2, 1]


def test_problem_answers_become_errors(shop: Shop, client: Client) -> None:
    with pytest.raises(ActionLinksError) as unknown:
        client.mint("no-such-action")
    assert (unknown.value.status, unknown.value.code) == (422, "unknown_action")
    assert unknown.value.problem["status"] == 422
    assert "no-such-action" in unknown.value.detail
    assert str(unknown.value).startswith("422 unknown_action: ")

    with pytest.raises(ActionLinksError) as invalid:
        client.mint("activate", max_uses=0)
    assert invalid.value.code == "validation_error"
    assert ["body", "max_uses"] in [entry["loc"] for entry in invalid.value.problem["errors"]]

    with pytest.raises(NotFound) as missing:
        client.status(client.mint("activate").id[:-2] + "xx")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(NotFound):
        client.redemption("no-such-redemption")


def test_a_wrong_api_key_is_unauthorized(shop: Shop) -> None:
    with Client(shop.base_url, "alk_" + "x" * 40) as stranger:
        with pytest.raises(Unauthorized) as caught:
            stranger.mint("activate")
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert isinstance(caught.value, ActionLinksError)


def test_ids_cannot_reach_another_route(client: Client) -> None:
    with pytest.raises(NotFound):
        client.status("../redemptions")


def test_a_closed_client_sends_nothing(shop: Shop) -> None:
    with shop.client() as links:
        links.mint("activate")
    with pytest.raises(RuntimeError):
        links.mint("activate")
