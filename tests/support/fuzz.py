"""What the schemathesis fuzz tests (``tests/test_fuzz_api.py``) fuzz against.

``seed(base_url, admin_token)`` gives a running service something real to
answer about, through its own HTTP API: clients ``shop`` and ``spare`` with
API keys, a webhook URL on a closed port of 127.0.0.1 (every delivery is
refused) and actions of every kind (plain, confirmation ``page`` and
``auto``, ``async`` and ``sync`` webhooks, no failure URL, unlimited); links
minted for each, some already redeemed, one revoked, a subject revoked.
Operations that destroy or reconfigure (deleting clients, keys, actions and
links, revoking subjects, patching a client) draw from things seeded for
them alone, so that the rest stays reachable.

``fuzz_config(...)`` is the schemathesis configuration: every default check,
positive and negative data, the credentials of the caller being played, and
*dictionaries* of the seeded values (tokens, link, redemption, client and key
ids, action names, allowed URLs, typed and exchange codes) that schemathesis puts in place of a
generated value half of the time. Random strings alone would only ever reach
"not found", "unknown action" and "invalid token"; with the dictionaries the
requests also reach minting, redemption, confirmation pages, webhooks,
revocation and the admin writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import schemathesis

from tests.support.processes import free_port
from tests.support.scale import scaled

SHOP_ORIGIN = "https://shop.example"
# Per operation: 10 in CI (the coverage phase's boundary cases, about 1,800 requests, come
# on top and do not shrink), 500 with ``HEAVY_SCALE=full``.
DEFAULT_MAX_EXAMPLES = scaled(10, 500)
MAX_EXAMPLES_VARIABLE = "FUZZ_MAX_EXAMPLES"
DICTIONARY_PROBABILITY = 0.5
CLIENTS = ("shop", "spare")

# The actions ``seed`` configures on every client: name → fields of the PUT.
ACTIONS: dict[str, dict[str, Any]] = {
    "activate": {},
    "confirm": {"confirm": "page", "max_uses": 3},
    "auto": {"confirm": "auto"},
    "hook": {"delivery": "async", "max_uses": None},
    "sync_hook": {"delivery": "sync"},
    "no_failure": {"failure_url": None},
    "unlimited": {"max_uses": None, "label": "Unlimited <b>uses</b>"},
    "typed": {"code": True},
}

# Which dictionary a parameter, or a property of the JSON body, may be drawn from.
BINDINGS = {
    "path.client_id": "client_ids",
    "path.key_id": "key_ids",
    "path.name": "actions",
    "path.token": "tokens",
    "path.link_id": "link_ids",
    "path.redemption_id": "redemption_ids",
    "query.link_id": "link_ids",
    "query.action": "actions",
    "query.subject": "subjects",
    "body.action": "actions",
    "body.token": "tokens",
    "body.subject": "subjects",
    "body.links[*].action": "actions",
    "body.success_url": "redirects",
    "body.failure_url": "redirects",
    "body.webhook_url": "webhook_urls",
    "body.allowed_redirects[*]": "redirect_prefixes",
}

# Operations that destroy or reconfigure draw from things seeded for them alone.
DESTRUCTIVE = {
    "DELETE /v1/admin/clients/{client_id}": {"path.client_id": "doomed_clients"},
    "PATCH /v1/admin/clients/{client_id}": {"path.client_id": "patched_clients"},
    "DELETE /v1/admin/clients/{client_id}/actions/{name}": {"path.name": "doomed_actions"},
    "DELETE /v1/admin/clients/{client_id}/keys/{key_id}": {"path.key_id": "doomed_keys"},
    "DELETE /v1/links/{link_id}": {"path.link_id": "doomed_link_ids"},
    "POST /v1/revocations": {"body.subject": "doomed_subjects"},
}
PATCHED_CLIENT = "patched"

# ``code`` means another thing in each of these bodies: the dictionary to draw it from.
CODES = {
    "POST /v1/redemptions/exchange": {"body.code": "exchange_codes"},
    "POST /v1/links/redeem": {"body.code": "typed_codes"},
}

# Statuses that answer schema-valid requests by rules a JSON schema cannot state;
# schemathesis's ``positive_data_acceptance`` accepts them for these operations only.
DOMAIN_REFUSALS: dict[str, list[str]] = {
    # data over 4096 bytes serialized; an action the client lacks, a lifetime over its
    # max_ttl, a redirect outside the allowlist
    "POST /v1/links": ["413", "422"],
    "POST /v1/links/batch": ["413", "422"],
    "POST /v1/revocations": ["422"],  # an action the client lacks
    "GET /v1/redemptions": ["422"],  # a cursor not signed for these filters
    "POST /v1/redemptions/exchange": ["410"],  # a code older than 300 s
    # a wrong typed code, a link without one; a link expired or revoked
    "POST /v1/links/redeem": ["410", "422"],
    # a token that does not verify; a link expired, used, revoked or disabled (no failure
    # URL); a POST without the confirmation page's nonce
    "GET /r/{token}": ["400", "410"],
    "HEAD /r/{token}": ["400", "410"],
    "POST /r/{token}": ["400", "403", "410"],
    # URLs that are not absolute http(s) URLs (the validator's rules are no JSON schema
    # pattern), or outside the allowlist; max_ttl below ttl; webhooks without a webhook_url
    "POST /v1/admin/clients": ["422"],
    "PATCH /v1/admin/clients/{client_id}": ["422"],
    "PUT /v1/admin/clients/{client_id}/actions/{name}": ["422"],
}
POSITIVE_DATA_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def max_examples() -> int:
    """Examples per operation: 10 in CI; ``FUZZ_MAX_EXAMPLES=500`` (or ``HEAVY_SCALE=full``)
    for a full run."""
    return int(os.environ.get(MAX_EXAMPLES_VARIABLE, DEFAULT_MAX_EXAMPLES))


@dataclass
class Seed:
    """Real values the service knows, by dictionary name, and the client's API key."""

    api_key: str
    values: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, *values: str) -> None:
        self.values.setdefault(name, []).extend(values)


def _ok(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else None


def seed(base_url: str, admin_token: str) -> Seed:
    webhook_url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    admin = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=base_url, headers=admin, timeout=30) as http:
        for client_id in (*CLIENTS, PATCHED_CLIENT, "doomed-1", "doomed-2"):
            body = {
                "id": client_id,
                "name": f"{client_id.title()} & Co",
                "webhook_url": webhook_url,
                "allowed_redirects": [f"{SHOP_ORIGIN}/"],
            }
            _ok(http.post("/v1/admin/clients", json=body), 201)
        seeded = Seed(api_key=_ok(http.post("/v1/admin/clients/shop/keys"), 201)["key"])
        seeded.add("client_ids", *CLIENTS)
        seeded.add("patched_clients", PATCHED_CLIENT)
        seeded.add("doomed_clients", "doomed-1", "doomed-2")
        seeded.add("actions", *ACTIONS)
        seeded.add("doomed_actions", "doomed_a", "doomed_b")
        seeded.add("subjects", "42", "43")
        seeded.add("doomed_subjects", "gone-1", "gone-2")
        seeded.add("webhook_urls", webhook_url)
        seeded.add("redirect_prefixes", f"{SHOP_ORIGIN}/", f"{SHOP_ORIGIN}/account")
        seeded.add("redirects", f"{SHOP_ORIGIN}/welcome?from=links", f"{SHOP_ORIGIN}/oops")
        for client_id in (*CLIENTS, PATCHED_CLIENT):
            for kind in ("key_ids", "doomed_keys"):
                key = _ok(http.post(f"/v1/admin/clients/{client_id}/keys"), 201)
                seeded.add(kind, key["id"])
            for name, fields in {**ACTIONS, "doomed_a": {}, "doomed_b": {}}.items():
                action = {
                    "success_url": f"{SHOP_ORIGIN}/welcome?from=links",
                    "failure_url": f"{SHOP_ORIGIN}/oops",
                    **fields,
                }
                _ok(http.put(f"/v1/admin/clients/{client_id}/actions/{name}", json=action), 200)
        _links(http, seeded)
    return seeded


def _links(http: httpx.Client, seeded: Seed) -> None:
    """Links of every action, half of them redeemed; one revoked, one subject revoked."""
    client = {"Authorization": f"Bearer {seeded.api_key}"}
    minted: list[dict[str, Any]] = [
        {"action": name, "subject": s} for name in ACTIONS for s in seeded.values["subjects"]
    ]
    minted.append({"action": "unlimited", "once_key": "voucher:1", "max_uses": 2, "data": {"n": 1}})
    for body in minted:
        link = _ok(http.post("/v1/links", json=body, headers=client), 201)
        seeded.add("tokens", link["token"])
        seeded.add("link_ids", link["id"])
        if "code" in link:
            seeded.add("typed_codes", link["code"])
    for body in ({"action": "activate", "subject": s} for s in seeded.values["doomed_subjects"]):
        link = _ok(http.post("/v1/links", json=body, headers=client), 201)
        seeded.add("doomed_link_ids", link["id"])
    for token in seeded.values["tokens"][::2]:
        followed = http.get(f"/r/{token}", headers={"Authorization": ""})
        code = parse_qs(urlsplit(followed.headers.get("location", "")).query).get("code")
        seeded.add("exchange_codes", *(code or ()))
    _ok(http.delete(f"/v1/links/{seeded.values['link_ids'][1]}", headers=client), 204)
    body = {"subject": "43", "action": "activate"}
    _ok(http.post("/v1/revocations", json=body, headers=client), 201)
    page = _ok(http.get("/v1/redemptions", params={"limit": 200}, headers=client), 200)
    seeded.add("redemption_ids", *(item["id"] for item in page["items"]))
    assert seeded.values["redemption_ids"], "seeding redeemed nothing"


def _bindings(keys: dict[str, str]) -> dict[str, Any]:
    return {
        key: {"dictionary": name, "probability": DICTIONARY_PROBABILITY}
        for key, name in keys.items()
    }


def _operations(seeded: Seed | None) -> list[dict[str, Any]]:
    operations: dict[str, dict[str, Any]] = {}
    for name, extra in DOMAIN_REFUSALS.items():
        expected = POSITIVE_DATA_ACCEPTED + extra
        operations[name] = {"checks": {"positive_data_acceptance": {"expected-statuses": expected}}}
    if seeded is not None:
        for name, keys in {**DESTRUCTIVE, **CODES}.items():
            operations.setdefault(name, {})["parameters"] = _bindings(keys)
    return [{"include-name": name, **config} for name, config in operations.items()]


def fuzz_config(
    *,
    auth: dict[str, str],
    seeded: Seed | None,
    examples: int | None = None,
    coverage: bool = True,
) -> schemathesis.Config:
    """All checks, positive and negative data; ``auth`` maps a security scheme to its token.

    ``coverage=False`` leaves out the coverage phase (its boundary cases of every
    parameter and body property): the schema's examples and the fuzzing phase remain.
    """
    generation = {"mode": "all", "max-examples": examples or max_examples(), "database": "none"}
    data: dict[str, Any] = {
        "generation": generation,
        "phases": {"coverage": {"enabled": coverage}},
        "max-redirects": 0,  # a 303 is the answer under test, not the way to shop.example
        "request-timeout": 30,
        "operations": _operations(seeded),
    }
    if auth:
        data["auth"] = {"openapi": {name: {"bearer": token} for name, token in auth.items()}}
    if seeded is not None:
        data["dictionaries"] = {name: {"values": v} for name, v in seeded.values.items()}
        data["parameters"] = _bindings(BINDINGS)
    return schemathesis.Config.from_dict(data)
