"""Minting through the API: every rule of API.md and its error code.

On PostgreSQL only: minting writes nothing, it reads a client's configuration. Storage
is tested on both databases by ``tests/test_store.py`` and the suites marked
``backends``. One app for the module, a client of its own per test
(``tests.support.shared_app``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service.state import AppState
from tests.conftest import PUBLIC_BASE_URL, SHOP_ORIGIN, Tenant, make_tenant
from tests.support.shared_app import FIXTURES, new_client_id, on_the_modules_loop

if TYPE_CHECKING:
    from service.registry import ClientConfig

backend, database_url, settings, app, state, http, shop = FIXTURES
Headers = dict[str, str]


async def test_mint_returns_the_documented_fields(shop: Tenant, state: AppState) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    link = await shop.mint(subject="42", data={"plan": "pro"})
    assert set(link) == {"id", "url", "token", "action", "subject", "expires_at", "max_uses"}
    assert link["url"] == f"{PUBLIC_BASE_URL}/r/{link['token']}"
    assert (link["action"], link["subject"], link["max_uses"]) == ("activate", "42", 1)
    expires = datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=86400) <= expires <= before + timedelta(seconds=86402)
    assert link["expires_at"].endswith("Z")
    claims = state.codec.verify_link(link["token"])
    assert (claims.link_id, claims.data, claims.subject) == (link["id"], {"plan": "pro"}, "42")


async def test_two_mints_give_two_links(shop: Tenant) -> None:
    first, second = await shop.mint(subject="1"), await shop.mint(subject="1")
    assert first["id"] != second["id"]
    assert first["token"] != second["token"]


async def test_url_ignores_the_host_header(shop: Tenant, http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/links",
        json={"action": "activate"},
        headers={**shop.headers, "Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )
    assert response.json()["url"].startswith(f"{PUBLIC_BASE_URL}/r/")


async def test_overrides(shop: Tenant, admin_headers: Headers) -> None:
    link = await shop.mint(
        expires_in=60, max_uses=3, once_key="voucher:1", success_url=f"{SHOP_ORIGIN}/v?x=1"
    )
    assert link["max_uses"] == 3
    await shop.put_action("forever", admin_headers, max_uses=None)
    assert (await shop.mint("forever"))["max_uses"] is None


async def problem_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


async def test_unknown_action(shop: Tenant, http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/links", json={"action": "foo"}, headers=shop.headers)
    body = await problem_of(response, 422, "unknown_action")
    assert "foo" in str(body["detail"])


async def test_disabled_action_is_unknown(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await shop.put_action("activate", admin_headers, enabled=False)
    response = await http.post("/v1/links", json={"action": "activate"}, headers=shop.headers)
    await problem_of(response, 422, "unknown_action")


async def test_ttl_too_long(shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers) -> None:
    await shop.put_action("short", admin_headers, ttl=60, max_ttl=120)
    ok = await http.post(
        "/v1/links", json={"action": "short", "expires_in": 120}, headers=shop.headers
    )
    assert ok.status_code == 201
    response = await http.post(
        "/v1/links", json={"action": "short", "expires_in": 121}, headers=shop.headers
    )
    await problem_of(response, 422, "ttl_too_long")


async def test_payload_too_large(shop: Tenant, http: httpx.AsyncClient) -> None:
    fits = {"s": "x" * (4096 - len('{"s":""}'))}
    assert (
        await http.post(
            "/v1/links", json={"action": "activate", "data": fits}, headers=shop.headers
        )
    ).status_code == 201
    too_big = {"s": "x" * (4097 - len('{"s":""}'))}
    response = await http.post(
        "/v1/links", json={"action": "activate", "data": too_big}, headers=shop.headers
    )
    await problem_of(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/",
        "https://shop.example.evil/",
        "https://shop.example@evil/",
        "http://shop.example/",
        "https://shop.example:444/",
        "//evil/",
        "javascript:alert(1)",
        "/relative",
        "https://shop.example/../x",
    ],
)
@pytest.mark.parametrize("field", ["success_url", "failure_url"])
async def test_redirect_not_allowed(
    shop: Tenant, http: httpx.AsyncClient, field: str, url: str
) -> None:
    response = await http.post(
        "/v1/links", json={"action": "activate", field: url}, headers=shop.headers
    )
    await problem_of(response, 422, "redirect_not_allowed")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"action": 5},
        {"action": "activate", "expires_in": 0},
        {"action": "activate", "expires_in": "60"},
        {"action": "activate", "expires_in": 1.5},
        {"action": "activate", "max_uses": 0},
        {"action": "activate", "max_uses": True},
        {"action": "activate", "subject": "x" * 201},
        {"action": "activate", "subject": 42},
        {"action": "activate", "once_key": "x" * 201},
        {"action": "activate", "unexpected": 1},
        [],
        "activate",
    ],
)
async def test_validation_errors_name_the_field(
    shop: Tenant, http: httpx.AsyncClient, body: object
) -> None:
    response = await http.post("/v1/links", json=body, headers=shop.headers)
    problem = await problem_of(response, 422, "validation_error")
    assert isinstance(problem["errors"], list)
    assert problem["errors"]


async def test_malformed_json(shop: Tenant, http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/links",
        content=b'{"action": "activate",',
        headers={**shop.headers, "Content-Type": "application/json"},
    )
    await problem_of(response, 422, "validation_error")


async def test_body_over_one_mebibyte_is_413(shop: Tenant, http: httpx.AsyncClient) -> None:
    body = b'{"action": "activate", "data": "' + b"x" * (1024 * 1024) + b'"}'
    response = await http.post(
        "/v1/links", content=body, headers={**shop.headers, "Content-Type": "application/json"}
    )
    await problem_of(response, 413, "payload_too_large")


async def test_chunked_body_over_one_mebibyte_is_413(shop: Tenant, http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"action": "activate", "data": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = await http.post(
        "/v1/links", content=chunks(), headers={**shop.headers, "Content-Type": "application/json"}
    )
    await problem_of(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer alk_wrong", "Bearer nope", "Token alk_x", "Bearer " + "a" * 5000],
)
async def test_missing_or_wrong_key_is_401(
    shop: Tenant, http: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await http.post("/v1/links", json={"action": "activate"}, headers=headers)
    await problem_of(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_one_client_never_mints_with_anothers_actions(
    http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    shop = await make_tenant(http, admin_headers, new_client_id())
    other = await make_tenant(http, admin_headers, new_client_id("other"))
    await other.put_action("secret_action", admin_headers)
    response = await http.post("/v1/links", json={"action": "secret_action"}, headers=shop.headers)
    await problem_of(response, 422, "unknown_action")


async def test_disabled_client_key_is_401(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    path = f"/v1/admin/clients/{shop.id}"
    assert (await http.patch(path, json={"enabled": False}, headers=admin_headers)).is_success
    response = await http.post("/v1/links", json={"action": "activate"}, headers=shop.headers)
    await problem_of(response, 401, "unauthorized")


async def test_batch_keeps_order(shop: Tenant, http: httpx.AsyncClient) -> None:
    items = [{"action": "activate", "subject": str(i)} for i in range(50)]
    response = await http.post("/v1/links/batch", json={"links": items}, headers=shop.headers)
    assert response.status_code == 201
    links = response.json()["links"]
    assert [link["subject"] for link in links] == [str(i) for i in range(50)]
    assert len({link["id"] for link in links}) == 50


async def test_batch_is_all_or_nothing(shop: Tenant, http: httpx.AsyncClient) -> None:
    items = [{"action": "activate"}, {"action": "activate"}, {"action": "nope"}, {"max_uses": 0}]
    response = await http.post("/v1/links/batch", json={"links": items}, headers=shop.headers)
    problem = await problem_of(response, 422, "unknown_action")
    indexes = {error["index"] for error in problem["errors"]}
    assert indexes == {2, 3}
    assert "links" not in problem


async def test_a_batchs_errors_name_each_bad_item_with_all_its_errors(
    shop: Tenant, http: httpx.AsyncClient
) -> None:
    """A batch is validated in one call; one with a bad item is looked at item by item,
    so the answer is as it always was: every bad item, in order, each with its errors."""
    ok = {"action": "activate", "subject": "s"}
    items = [
        ok,
        {"action": "activate", "max_uses": 0, "extra": 1},
        ok,
        {"action": "nope"},
        {"action": "activate", "success_url": "https://elsewhere.example/x"},
        ok,
    ]
    response = await http.post("/v1/links/batch", json={"links": items}, headers=shop.headers)
    problem = await problem_of(response, 422, "validation_error")
    assert problem["detail"] == "3 item(s) invalid: [1, 3, 4]"
    assert problem["errors"] == [
        {
            "index": 1,
            "loc": ["links", 1, "max_uses"],
            "msg": "Input should be greater than or equal to 1",
            "type": "greater_than_equal",
            "code": "validation_error",
        },
        {
            "index": 1,
            "loc": ["links", 1, "extra"],
            "msg": "Extra inputs are not permitted",
            "type": "extra_forbidden",
            "code": "validation_error",
        },
        {
            "index": 3,
            "loc": ["links", 3],
            "msg": f"client '{shop.id}' has no action 'nope'",
            "code": "unknown_action",
        },
        {
            "index": 4,
            "loc": ["links", 4],
            "msg": f"success_url is not within the allowed_redirects of client '{shop.id}'",
            "code": "redirect_not_allowed",
        },
    ]


async def test_a_batch_of_valid_items_that_cannot_all_be_minted_names_each(
    shop: Tenant, http: httpx.AsyncClient
) -> None:
    """Every item validates, two cannot be minted: the first one's code, both named."""
    ok = {"action": "activate"}
    items = [ok, {"action": "nope"}, ok, {"action": "activate", "expires_in": 10**9}]
    response = await http.post("/v1/links/batch", json={"links": items}, headers=shop.headers)
    problem = await problem_of(response, 422, "unknown_action")
    assert [(e["index"], e["code"]) for e in problem["errors"]] == [
        (1, "unknown_action"),
        (3, "ttl_too_long"),
    ]


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_size_limits(shop: Tenant, http: httpx.AsyncClient, count: int) -> None:
    items = [{"action": "activate"}] * count
    response = await http.post("/v1/links/batch", json={"links": items}, headers=shop.headers)
    await problem_of(response, 422, "validation_error")


def activate_client(
    *, max_ttl: int = 600, max_uses: int, code: bool, one_click: bool = False
) -> ClientConfig:
    """Client ``shop`` with one action, ``activate`` (600 s), for minting without a server."""
    from service.registry import ActionConfig, ClientConfig

    action = ActionConfig(
        name="activate",
        label=None,
        success_url=f"{SHOP_ORIGIN}/ok",
        failure_url=None,
        ttl=600,
        max_ttl=max_ttl,
        max_uses=max_uses,
        confirm="none",
        delivery="none",
        enabled=True,
        code=code,
        one_click=one_click,
    )
    return ClientConfig("shop", "Shop", None, "s", (f"{SHOP_ORIGIN}/",), True, {"activate": action})


@pytest.mark.parametrize(
    "options", [{}, {"code": True}, {"one_click": True}, {"code": True, "one_click": True}]
)
def test_the_mint_answer_encodes_a_link_as_its_model_does(options: dict[str, bool]) -> None:
    """The minting code spells the answer's fields itself and the routes encode it
    (orjson): the same JSON as the model's, extras only when they apply."""
    import orjson

    from service.api.links import created
    from service.mint import Minter
    from service.schemas import LINK_EXTRAS, LinkRequest, LinkResponse
    from service.tokens import TokenCodec

    client = activate_client(
        max_uses=1, code=options.get("code", False), one_click=options.get("one_click", False)
    )
    minter = Minter(TokenCodec([b"k" * 32]), PUBLIC_BASE_URL, store=None)  # type: ignore[arg-type]
    answer = minter.sign(client, [dict(LinkRequest(action="activate", subject="42"))]).answers[0]
    model = LinkResponse.model_validate(answer)
    assert orjson.loads(created(answer).body) == model.model_dump(mode="json")
    absent = {key for key in LINK_EXTRAS if getattr(model, key) is None}
    assert set(answer) == set(LinkResponse.model_fields) - absent
    assert ("code" in answer) is options.get("code", False)
    assert ("headers" in answer) is options.get("one_click", False)


def test_minted_tokens_are_the_tokens_of_their_claims() -> None:
    """Minting signs each link from its fields, not from a ``LinkClaims``: every token of
    a batch is still the one its claims sign to, byte for byte, its id the client's."""
    from service.mint import Minter
    from service.schemas import LinkRequest
    from service.tokens import TokenCodec

    client = activate_client(max_ttl=6000, max_uses=3, code=True)
    codec = TokenCodec([b"old" * 11, b"k" * 32])
    requests = [
        {"action": "activate"},  # a batch item's fields: only those it has
        dict(
            LinkRequest(
                action="activate",
                subject="42",
                data={"é": [1, 2.5, None, "\u2603"], "big": 2**70},
                expires_in=5000,
                max_uses=None,
                once_key="voucher:1",
                success_url=f"{SHOP_ORIGIN}/done",
                failure_url=f"{SHOP_ORIGIN}/oops",
                code=False,
                supersede=True,
            )
        ),
    ]
    signed = Minter(codec, PUBLIC_BASE_URL, store=None).sign(client, requests)  # type: ignore[arg-type]
    plain, full = (codec.verify_link(answer["token"]) for answer in signed.answers)
    assert [codec.sign_link(claims) for claims in (plain, full)] == [
        answer["token"] for answer in signed.answers
    ]
    assert (plain.max_uses, plain.code, plain.expires_at - plain.issued_at_us // 10**6) == (
        3,
        True,
        600,
    )
    assert [plain.link_id, full.link_id] == [answer["id"] for answer in signed.answers]
    assert (full.subject, full.data, full.max_uses, full.once_key, full.code) == (
        "42",
        {"é": [1, 2.5, None, "\u2603"], "big": 2**70},
        3,
        "voucher:1",
        False,
    )
    assert signed.answers[0]["code"] == codec.typed_code(plain)
    assert "code" not in signed.answers[1]
    assert all(codec.owns_link_id("shop", answer["id"]) for answer in signed.answers)
    assert signed.superseding == {("42", "activate"): full.issued_at_us}


on_the_modules_loop(globals())
