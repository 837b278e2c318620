"""Standard Webhooks signing, ids, payloads and retry timing: the parts without I/O."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from email.utils import formatdate

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service.admin import new_webhook_secret
from service.outbox import retry_delay
from service.store import RedemptionRecord
from service.webhooks import (
    body,
    headers_for,
    message_id,
    parse_retry_after,
    refusal_reason,
    sign,
    webhook_id,
)

# The test vector the Standard Webhooks specification publishes with its libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specification_test_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def event(**fields: object) -> RedemptionRecord:
    values: dict[str, object] = {
        "redemption_id": "r1",
        "client_id": "shop",
        "link_id": "L1",
        "claim_key": "l:L1",
        "action": "activate",
        "subject": "42",
        "data": {"b": 1, "a": [1, 2, {"y": None, "x": "é"}]},
        "use": 1,
        "max_uses": 1,
        "redeemed_at": datetime(2026, 11, 25, 16, 0, 0, 123456, tzinfo=UTC),
    }
    values.update(fields)
    return RedemptionRecord(**values)  # type: ignore[arg-type]


def test_headers_verify_with_the_standardwebhooks_library() -> None:
    secret = new_webhook_secret()
    message = event()
    content = body(message)
    headers = headers_for(message, secret, content, int(time.time()))
    payload = Webhook(secret).verify(content, headers)
    assert payload == {
        "type": "link.redeemed",
        "timestamp": "2026-11-25T16:00:00.123456Z",
        "data": {
            "redemption_id": "r1",
            "link_id": "L1",
            "action": "activate",
            "subject": "42",
            "data": {"a": [1, 2, {"x": "é", "y": None}], "b": 1},
            "use": 1,
            "max_uses": 1,
            "redeemed_at": "2026-11-25T16:00:00.123456Z",
        },
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(content, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(content.replace(b"42", b"43"), headers)


def test_the_body_does_not_depend_on_key_order_or_time_of_sending() -> None:
    reordered = event(data={"a": [1, 2, {"x": "é", "y": None}], "b": 1})
    assert body(event()) == body(reordered)
    assert body(event()).isascii()


def test_webhook_ids_are_fixed_per_redemption_and_distinct_otherwise() -> None:
    first = message_id(event())
    assert first == webhook_id("r1") == message_id(event(use=2, data=None))
    assert first.startswith("msg_")
    assert len(first) == len("msg_") + 24
    # Another redemption of the same use of the same link (a use given back and
    # taken again) is another message.
    others = {message_id(event(redemption_id=r)) for r in ("r2", "r1 ", "R1", "r1\x00")}
    assert len(others) == 4
    assert first not in others


def test_retry_delays_follow_the_schedule_then_stop() -> None:
    schedule = [5.0, 300.0, 1800.0]
    rng = random.Random(7)
    delays = [retry_delay(n, schedule, rng=rng) for n in (1, 2, 3)]
    for delay, planned in zip(delays, schedule, strict=True):
        assert delay is not None
        assert planned * 0.9 <= delay <= planned * 1.1
    assert retry_delay(4, schedule) is None
    assert retry_delay(1, []) is None


def test_retry_after_is_a_lower_bound() -> None:
    delay = retry_delay(1, [5.0], retry_after=120.0)
    assert delay == 120.0
    delay = retry_delay(1, [5.0], retry_after=1.0)
    assert delay is not None
    assert delay >= 4.5


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("99999999") == 86_400.0
    in_a_minute = parse_retry_after(formatdate(now + 60, usegmt=True), now=now)
    assert in_a_minute is not None
    assert 59 <= in_a_minute <= 61
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0
    for nonsense in (None, "", "soon", "-5", "1.5e9", "Mon, 99 Foo"):
        assert parse_retry_after(nonsense) is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"error": "out_of_stock"}', "out_of_stock"),
        (b'{"error": "voucher.expired:2026"}', "voucher.expired:2026"),
        (b'{"error": "<script>alert(1)</script>"}', None),
        (b'{"error": "has spaces"}', None),
        (b'{"error": "' + b"x" * 65 + b'"}', None),
        (b'{"error": 42}', None),
        (b'{"code": "out_of_stock"}', None),
        (b'["error"]', None),
        (b"out_of_stock", None),
        (b'{"error": "out_of_st', None),
        (b"\xff\xfe", None),
    ],
)
def test_refusal_reasons_are_plain_codes_only(body: bytes, reason: str | None) -> None:
    assert refusal_reason(body) == reason
