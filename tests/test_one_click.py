"""One-click unsubscribe (RFC 8058, API.md *Finishing the flow*): ``POST /r/{token}``
with ``List-Unsubscribe=One-Click``, through the same redemption as every door.

In-process on PostgreSQL and SQLite (one app per database for the module, a new
client per test: ``tests.support.shared_app``); then once the way a mailbox
provider calls a real ``serve`` process (no cookie, no Referer, a form body).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from service.config import Settings
from service.state import AppState
from tests.conftest import Tenant, link_path, make_tenant
from tests.support import shared_app
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.processes import running_service
from tests.support.receiver import Answer, Receiver
from tests.support.served import provision_shop, service_env
from tests.test_finish import sign

backend, database_url, app, state, http, shop = (  # the module's app; settings below
    shared_app.backend,
    shared_app.database_url,
    shared_app.app,
    shared_app.state,
    shared_app.http,
    shared_app.shop,
)

Headers = dict[str, str]
Json = dict[str, Any]
ONE_CLICK = "List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DONE = "You have been unsubscribed. There is nothing more to do."


async def click(http: httpx.AsyncClient, link: Json, body: str = ONE_CLICK, **headers: str) -> Any:
    """POST the RFC 8058 body to ``link`` as a mail provider does: a form, nothing else."""
    return await http.post(link_path(link), content=body, headers={**FORM, **headers})


async def vias(database_url: str, client_id: str) -> list[str]:
    """How the client's links were redeemed, in order."""
    query = "SELECT via FROM redemptions WHERE client_id = $1 ORDER BY seq"
    return [r["via"] for r in await fetch(database_url, query, client_id)]


@pytest_asyncio.fixture(loop_scope="module")
async def unsubscribe(shop: Tenant, admin_headers: Headers) -> Tenant:
    """``shop`` with action ``unsubscribe``: one click, behind a confirmation page."""
    await shop.put_action("unsubscribe", admin_headers, one_click=True, confirm="page")
    return shop


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_the_mint_answer_carries_the_mail_headers_only_for_one_click_actions(
    unsubscribe: Tenant, http: httpx.AsyncClient, admin_headers: Headers
) -> None:
    link = await unsubscribe.mint("unsubscribe", subject="42")
    assert link["headers"] == {
        "List-Unsubscribe": f"<{link['url']}>",
        "List-Unsubscribe-Post": ONE_CLICK,
    }
    assert "headers" not in await unsubscribe.mint()
    batch = await http.post(
        "/v1/links/batch",
        json={"links": [{"action": "unsubscribe"}, {"action": "activate"}]},
        headers=unsubscribe.headers,
    )
    first, second = batch.json()["links"]
    assert first["headers"]["List-Unsubscribe"] == f"<{first['url']}>"
    assert "headers" not in second
    actions = f"/v1/admin/clients/{unsubscribe.id}/actions"
    shown = await http.get(f"{actions}/unsubscribe", headers=admin_headers)
    assert (shown.json()["one_click"], shown.json()["confirm"]) == (True, "page")
    default = await http.get(f"{actions}/activate", headers=admin_headers)
    assert default.json()["one_click"] is False


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_scanners_take_nothing_and_one_click_redeems_a_confirm_link_once(
    unsubscribe: Tenant, http: httpx.AsyncClient, database_url: str
) -> None:
    link = await unsubscribe.mint("unsubscribe", subject="42")
    # A scanner first: GET and HEAD show or describe the confirmation page, use nothing.
    assert (await http.get(link_path(link))).status_code == 200
    assert (await http.head(link_path(link))).status_code == 200
    assert await vias(database_url, unsubscribe.id) == []

    done = await click(http, link)
    assert done.status_code == 200, done.text
    assert done.headers["content-type"].startswith("text/plain")
    assert done.text.strip() == DONE
    assert done.headers["cache-control"] == "no-store"
    assert "location" not in done.headers
    # Twice is done too, and takes nothing more.
    again = await click(http, link)
    assert (again.status_code, again.text.strip()) == (200, DONE)
    assert await vias(database_url, unsubscribe.id) == ["one_click"]
    german = await click(http, link, **{"Accept-Language": "de"})
    assert german.headers["content-language"] == "de"
    assert german.text.strip() != DONE


@pytest.mark.backends(POSTGRES, SQLITE)
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("", FORM["Content-Type"]),
        ("List-Unsubscribe=Yes", FORM["Content-Type"]),
        ("List-Unsubscribe=One-Click&confirm=x", FORM["Content-Type"]),
        (ONE_CLICK, "text/plain"),
        (ONE_CLICK, "application/json"),
        ('{"List-Unsubscribe": "One-Click"}', "application/json"),
    ],
)
async def test_any_other_post_still_needs_the_confirmation_nonce(
    unsubscribe: Tenant, http: httpx.AsyncClient, database_url: str, body: str, content_type: str
) -> None:
    link = await unsubscribe.mint("unsubscribe")
    refused = await http.post(link_path(link), content=body, headers={"Content-Type": content_type})
    assert refused.status_code == 403  # the confirmation page again
    assert await vias(database_url, unsubscribe.id) == []


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_the_one_click_body_does_not_bypass_confirmation_of_other_actions(
    shop: Tenant, http: httpx.AsyncClient, admin_headers: Headers, database_url: str
) -> None:
    await shop.put_action("careful", admin_headers, confirm="page")
    careful = await shop.mint("careful")
    assert (await click(http, careful)).status_code == 403
    plain = await shop.mint()  # confirm "none": a POST redeems, as any POST does
    answered = await click(http, plain)
    assert answered.status_code == 303
    assert await vias(database_url, shop.id) == ["link"]


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_dead_links_answer_their_page_and_bad_tokens_400(
    unsubscribe: Tenant, http: httpx.AsyncClient, admin_headers: Headers, state: AppState
) -> None:
    mine = {"client_id": unsubscribe.id, "link_id": state.codec.mint_link_id(unsubscribe.id)}
    expired = {"token": sign(state, action="unsubscribe", expires_at=1, **mine)}
    assert (await click(http, expired)).status_code == 410
    revoked = await unsubscribe.mint("unsubscribe")
    assert (await http.delete(f"/v1/links/{revoked['id']}", headers=unsubscribe.headers)).is_success
    assert (await click(http, revoked)).status_code == 410
    bad = await click(http, {"token": revoked["token"][:-2] + "xx"})
    assert (bad.status_code, bad.headers["content-type"][:9]) == (400, "text/html")
    live = await unsubscribe.mint("unsubscribe")
    await unsubscribe.put_action("unsubscribe", admin_headers, one_click=True, enabled=False)
    assert (await click(http, live)).status_code == 410


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().up()
    yield receiver
    receiver.down()


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return shared_app.app_settings(database_url, webhook_timeout=1.0)


@pytest.mark.backends(POSTGRES, SQLITE)
async def test_webhooks_say_one_click_and_sync_can_veto(
    http: httpx.AsyncClient, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    client_id = shared_app.new_client_id()
    shop = await make_tenant(http, admin_headers, client_id, webhook_url=receiver.url)
    await shop.put_action("hooked", admin_headers, delivery="async", one_click=True)
    await shop.put_action("vetoed", admin_headers, delivery="sync", one_click=True)

    assert (await click(http, await shop.mint("hooked", subject="42"))).status_code == 200
    [request] = await receiver.wait_for(1)
    assert request.verify(shop.webhook_secret)["data"]["subject"] == "42"

    vetoed = await shop.mint("vetoed")
    receiver.answer(Answer(409, json={"error": "not_subscribed"}))
    assert (await click(http, vetoed)).status_code == 409  # the rejected page: not done
    receiver.answer(Answer(200))
    assert (await click(http, vetoed)).status_code == 200  # the use was given back
    assert await vias(database_url, client_id) == ["one_click", "one_click"]
    listed = await http.get("/v1/redemptions", headers=shop.headers)
    assert {item["via"] for item in listed.json()["items"]} == {"one_click"}


async def test_a_mailbox_provider_unsubscribes_through_a_real_process(
    postgres_url: str, tmp_path: Path
) -> None:
    """On the session's database, as a client of its own."""
    client_id = shared_app.new_client_id()
    env = service_env(postgres_url, 2)
    with running_service(env, tmp_path) as service:
        async with httpx.AsyncClient(base_url=service.base_url) as http:
            headers = await provision_shop(http, client_id, one_click=True, confirm="auto")
            minted = await http.post("/v1/links", json={"action": "go"}, headers=headers)
            link = minted.json()
            list_unsubscribe = link["headers"]["List-Unsubscribe"]
            assert list_unsubscribe == f"<{service.base_url}/r/{link['token']}>"
            url = list_unsubscribe[1:-1]
        # What a provider sends: the URL from the header, a form body, no cookie, no Referer.
        async with httpx.AsyncClient() as provider:
            assert (await provider.head(url)).status_code == 200  # its scanner first
            assert (await provider.get(url)).status_code == 200  # the auto-confirm page
            done = await provider.post(url, content=ONE_CLICK, headers=FORM)
            assert (done.status_code, done.text.strip()) == (200, DONE)
            assert done.request.headers.get("cookie") is None
            assert (await provider.post(url, content=ONE_CLICK, headers=FORM)).status_code == 200
    query = "SELECT via, use FROM redemptions WHERE client_id = $1"
    rows = await fetch(postgres_url, query, client_id)
    assert [(r["via"], r["use"]) for r in rows] == [("one_click", 1)]
    assert link["token"] not in service.log()


shared_app.on_the_modules_loop(globals())
