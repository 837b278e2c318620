"""Real signed deliveries from the service, verified with the client; redelivery."""

from __future__ import annotations

import json
import time

import pytest
from action_links_client import (
    ActionLinksError,
    Client,
    NotFound,
    WebhookVerificationError,
    verify_webhook,
)

from tests.support.links import outcome_of, redemption_id_of
from tests.support.receiver import Received
from tests.support.shop_service import Shop, subject

pytestmark = pytest.mark.slow  # the session's shop: a real service process


def deliveries(shop: Shop, link_id: str, count: int, timeout: float = 30) -> list[Received]:
    """The receiver's requests for ``link_id``, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            r for r in shop.receiver.received if json.loads(r.body)["data"]["link_id"] == link_id
        ]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"{len(found)} deliveries of {link_id}, wanted {count}"
            return found
        time.sleep(0.05)


def redeemed(shop: Shop, client: Client) -> tuple[str, str, Received]:
    """A link of the webhook action, followed once: its id, redemption id and delivery."""
    link = client.mint("hook", subject=subject(), data={"order": 7})
    response = shop.follow(link)
    assert outcome_of(response) == "success"
    (delivery,) = deliveries(shop, link.id, 1)
    return link.id, redemption_id_of(response), delivery


def test_a_real_delivery_verifies(shop: Shop, client: Client) -> None:
    link_id, redemption_id, delivery = redeemed(shop, client)
    event = verify_webhook(shop.webhook_secret, delivery.body, delivery.headers)
    assert event["type"] == "link.redeemed"
    assert event["data"]["link_id"] == link_id
    assert event["data"]["redemption_id"] == redemption_id
    assert event["data"]["data"] == {"order": 7}
    # str bodies and differently cased header names verify the same.
    shouted = {name.upper(): value for name, value in delivery.headers.items()}
    assert verify_webhook(shop.webhook_secret, delivery.body.decode(), shouted) == event


def test_an_altered_or_foreign_delivery_is_refused(shop: Shop, client: Client) -> None:
    _, _, delivery = redeemed(shop, client)
    secret, body, headers = shop.webhook_secret, delivery.body, delivery.headers
    tampered = body.replace(b'"order":7', b'"order":8')
    assert tampered != body
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, tampered, headers)
    with pytest.raises(WebhookVerificationError):
        verify_webhook("whsec_" + "QUJD" * 8, body, headers)  # another client's secret
    for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        with pytest.raises(WebhookVerificationError):
            verify_webhook(secret, body, {k: v for k, v in headers.items() if k != missing})
    stale = {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, body, stale)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, body, {**headers, "webhook-signature": "v1"})
    with pytest.raises(ValueError, match="not a webhook secret"):
        verify_webhook("", body, headers)


def test_during_a_rotation_either_secret_verifies(shop: Shop, client: Client) -> None:
    _, _, delivery = redeemed(shop, client)
    other = "whsec_" + "QUJD" * 8
    for secrets in ([other, shop.webhook_secret], (shop.webhook_secret, other)):
        event = verify_webhook(secrets, delivery.body, delivery.headers)
        assert event["type"] == "link.redeemed"
    with pytest.raises(WebhookVerificationError):
        verify_webhook([other, other], delivery.body, delivery.headers)
    with pytest.raises(ValueError, match="no webhook secret"):
        verify_webhook([], delivery.body, delivery.headers)


def test_redeliver_sends_the_same_message_again(shop: Shop, client: Client) -> None:
    link_id, redemption_id, first = redeemed(shop, client)
    client.redeliver(redemption_id)
    again = deliveries(shop, link_id, 2)[1]
    assert again.webhook_id == first.webhook_id
    assert verify_webhook(shop.webhook_secret, again.body, again.headers) == json.loads(first.body)
    deadline = time.monotonic() + 30
    while client.redemption(redemption_id).delivery.status != "delivered":
        assert time.monotonic() < deadline, client.redemption(redemption_id).delivery
        time.sleep(0.05)


def test_redeliver_refuses_what_has_no_webhook(shop: Shop, client: Client) -> None:
    link = client.mint("activate")
    redemption_id = redemption_id_of(shop.follow(link))
    with pytest.raises(ActionLinksError) as caught:
        client.redeliver(redemption_id)
    assert (caught.value.status, caught.value.code) == (409, "conflict")
    with pytest.raises(NotFound):
        client.redeliver("no-such-redemption")
