"""Example values the OpenAPI document shows, shared by the operations that send them.

Plain JSON, written as a caller would see it. ``tests/test_openapi.py``
validates every example of the document against its schema, so an example
that no longer matches a model fails there, not in a reader's code.
"""

from __future__ import annotations

from typing import Any

BASE_URL = "https://links.example.com"
LINK_ID = "Qm9vdGNhbXAtMTIzNDU2"
REDEMPTION_ID = "bWVyY2kgYmVhdWNvdXA"
TOKEN = (
    "eyJsIjoiUW05dmRHTmhiWEF0TVRJek5EVTIiLCJjIjoic2hvcCJ9.Zz1kQw.q4cX8m2Vn0lH7c3bR1sT5uW9yA2dE6fJ"
)
SHOP = "https://shop.example"

LINK_REQUEST: dict[str, Any] = {
    "action": "activate_user",
    "subject": "42",
    "data": {"plan": "pro"},
    "expires_in": 86400,
}
LINK: dict[str, Any] = {
    "id": LINK_ID,
    "url": f"{BASE_URL}/r/{TOKEN}",
    "token": TOKEN,
    "action": "activate_user",
    "subject": "42",
    "expires_at": "2026-11-26T16:00:00Z",
    "max_uses": 1,
}
RESEND_REQUEST: dict[str, Any] = {
    "resend": "WyJ7XCJpXCI6XCJRbTl2ZEdOaGJYQXRNVEl6...fQ.3kq0kSx9Y2rHq1Q0rW1lN1oV7bJf3b5f3m0mQ"
}
BATCH_REQUEST: dict[str, Any] = {
    "links": [
        {"action": "activate_user", "subject": "42"},
        {"action": "unsubscribe", "subject": "43", "expires_in": 2592000},
    ]
}
BATCH: dict[str, Any] = {
    "links": [
        LINK,
        {
            **LINK,
            "id": "Zm9yIHRoZSBzZWNvbmQx",
            "action": "unsubscribe",
            "subject": "43",
            "expires_at": "2026-12-25T16:00:00Z",
            "max_uses": None,
        },
    ]
}
LINK_STATUS: dict[str, Any] = {
    "id": LINK_ID,
    "uses": 1,
    "revoked": False,
    "first_redeemed_at": "2026-11-25T16:03:12Z",
    "last_redeemed_at": "2026-11-25T16:03:12Z",
}
INSPECT_REQUEST: dict[str, Any] = {"token": TOKEN}
INSPECTED: dict[str, Any] = {
    "valid": False,
    "reason": "used",
    "link": {
        "id": LINK_ID,
        "action": "activate_user",
        "subject": "42",
        "data": {"plan": "pro"},
        "expires_at": "2026-11-26T16:00:00Z",
        "max_uses": 1,
        "uses": 1,
    },
}
REVOCATION_REQUEST: dict[str, Any] = {"subject": "42", "action": "activate_user"}
REVOCATION: dict[str, Any] = {
    "subject": "42",
    "action": "activate_user",
    "revoked_at": "2026-11-25T17:00:00.123456Z",
}
REDEMPTION: dict[str, Any] = {
    "id": REDEMPTION_ID,
    "link_id": LINK_ID,
    "action": "activate_user",
    "subject": "42",
    "data": {"plan": "pro"},
    "use": 1,
    "max_uses": 1,
    "once_key": None,
    "via": "link",
    "redeemed_at": "2026-11-25T16:03:12.482913Z",
    "exchanged_at": None,
    "delivery": {"status": "delivered", "attempts": 1, "last_error": None},
}
EXCHANGE_CODE = (
    "WyJzaG9wIiwiYldWeVkya2dZbVZoZFdOdmRYQSIsMTc5NjIzODIwNV0"
    ".hEAp9S50cfciUGDV9YspD0WpzULDvQZFXAwQgm1zCc"
)
EXCHANGE_REQUEST: dict[str, Any] = {"code": EXCHANGE_CODE}
EXCHANGED: dict[str, Any] = {**REDEMPTION, "exchanged_at": "2026-11-25T16:03:13.120044Z"}
TYPED_CODE_REQUEST: dict[str, Any] = {"token": TOKEN, "code": "482913"}
TYPED: dict[str, Any] = {**REDEMPTION, "via": "code"}
REDEMPTION_PAGE: dict[str, Any] = {"items": [REDEMPTION], "next_cursor": None}

CLIENT_CREATE: dict[str, Any] = {
    "id": "shop",
    "name": "Example Shop",
    "webhook_url": f"{SHOP}/hooks/links",
    "allowed_redirects": [f"{SHOP}/"],
}
CLIENT: dict[str, Any] = {
    **CLIENT_CREATE,
    "enabled": True,
    "created_at": "2026-11-01T09:00:00Z",
    "updated_at": "2026-11-01T09:00:00Z",
}
WEBHOOK_SECRET = {"webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
CLIENT_CREATED: dict[str, Any] = {**CLIENT, **WEBHOOK_SECRET}
CLIENT_UPDATE: dict[str, Any] = {"allowed_redirects": [f"{SHOP}/", f"{SHOP}/account"]}
KEY: dict[str, Any] = {
    "id": "key_Xy3kP0aQ2mBv",
    "prefix": "alk_9fT2xQ1b",
    "created_at": "2026-11-01T09:00:05Z",
}
KEY_CREATED: dict[str, Any] = {**KEY, "key": "alk_9fT2xQ1bW4nLr8ZcYd0sKe6pVh3JgM5uA7oTqB2xNi"}
ACTION_PUT: dict[str, Any] = {
    "success_url": f"{SHOP}/welcome",
    "failure_url": f"{SHOP}/oops",
    "ttl": 86400,
    "max_uses": 1,
    "confirm": "page",
    "label": "Activate your account",
}
ACTION: dict[str, Any] = {
    "client_id": "shop",
    "name": "activate_user",
    "label": "Activate your account",
    "success_url": f"{SHOP}/welcome",
    "failure_url": f"{SHOP}/oops",
    "ttl": 86400,
    "max_ttl": 2592000,
    "max_uses": 1,
    "confirm": "page",
    "delivery": "none",
    "enabled": True,
    "code": False,
    "one_click": False,
    "created_at": "2026-11-01T09:00:10Z",
    "updated_at": "2026-11-01T09:00:10Z",
}

LINK_REDEEMED: dict[str, Any] = {
    "type": "link.redeemed",
    "timestamp": "2026-11-25T16:03:12.482913Z",
    "data": {
        "redemption_id": REDEMPTION_ID,
        "link_id": LINK_ID,
        "action": "activate_user",
        "subject": "42",
        "data": {"plan": "pro"},
        "use": 1,
        "max_uses": 1,
        "redeemed_at": "2026-11-25T16:03:12.482913Z",
    },
}
