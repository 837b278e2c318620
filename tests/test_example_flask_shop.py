"""The Flask example (examples/flask_shop) end to end: both flows, with real processes.

A real ``action-links serve`` on PostgreSQL; the shop served by werkzeug on
127.0.0.1 in a thread; an httpx client as the person's browser, following
every redirect from the mailed link to the shop's page.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from action_links_client import Client
from werkzeug.serving import make_server

from examples.flask_shop.shop import Settings, Store, create_app
from tests.conftest import postgres_url  # noqa: F401
from tests.support import database
from tests.support.logcheck import remember_secrets
from tests.support.processes import free_port, running_command
from tests.support.served import ADMIN, service_env

pytestmark = pytest.mark.slow


@dataclass
class Running:
    shop_url: str
    store: Store
    links: Client
    browser: httpx.Client

    def mailed_link(self, response: httpx.Response) -> str:
        """The link in the mail the shop just showed."""
        assert response.status_code == 201, response.text
        found = re.search(r'id="mail-link" href="([^"]+)"', response.text)
        assert found is not None, response.text
        return found.group(1).replace("&amp;", "&")

    def sign_up(self, email: str) -> tuple[str, str]:
        """A new account's id and its mailed activation link."""
        signed_up = self.browser.post(f"{self.shop_url}/signup", data={"email": email})
        link = self.mailed_link(signed_up)
        found = re.search(r'id="user">([^<]+)<', signed_up.text)
        assert found is not None, signed_up.text
        return found[1], link

    def account(self, user_id: str) -> str:
        page = self.browser.get(f"{self.shop_url}/users/{user_id}")
        assert page.status_code == 200, page.text
        return page.text


def provision(base_url: str, shop_url: str) -> tuple[str, str]:
    """Client ``flask-shop`` and its two actions, as the example's README says."""
    with httpx.Client(base_url=base_url, headers=ADMIN, timeout=10) as admin:
        body = {
            "id": "flask-shop",
            "name": "Flask shop",
            "webhook_url": f"{shop_url}/hooks/action-links",
            "allowed_redirects": [f"{shop_url}/"],
        }
        created = admin.post("/v1/admin/clients", json=body)
        assert created.status_code == 201, created.text
        actions = {
            "activate_user": ("/activated", "/activation-failed", "none"),
            "redeem_voucher": ("/voucher/applied", "/voucher/refused", "sync"),
        }
        for name, (success, failure, delivery) in actions.items():
            action = {
                "success_url": shop_url + success,
                "failure_url": shop_url + failure,
                "delivery": delivery,
            }
            put = admin.put(f"/v1/admin/clients/flask-shop/actions/{name}", json=action)
            assert put.status_code == 200, put.text
        key = admin.post("/v1/admin/clients/flask-shop/keys")
        assert key.status_code == 201, key.text
    api_key, secret = key.json()["key"], created.json()["webhook_secret"]
    remember_secrets(api_key, secret)
    return api_key, secret


@pytest.fixture(scope="module")
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """One service and one shop for both flows (each test signs up a user of its own),
    on the session's database, emptied first (a database of its own costs a DROP)."""
    url: str = request.getfixturevalue("postgres_url")  # skips, or fails in CI, without it
    database.truncate_all(url)
    port, shop_port = free_port(), free_port()
    base_url, shop_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{shop_port}"
    env = service_env(url, 4, PUBLIC_BASE_URL=base_url)
    command = [sys.executable, "-m", "service", "serve", "--port", str(port)]
    with running_command(command, env, tmp_path_factory.mktemp("flask_shop"), port):
        api_key, secret = provision(base_url, shop_url)
        store = Store()
        app = create_app(Settings(base_url, api_key, secret), store)
        server = make_server("127.0.0.1", shop_port, app, threaded=True)
        # Polled every 50 ms (not 0.5 s): ``shutdown`` waits for the loop to notice.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            with (
                Client(base_url, api_key) as links,
                httpx.Client(follow_redirects=True, timeout=10) as browser,
            ):
                yield Running(shop_url, store, links, browser)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
            app.extensions["action_links"].close()


def test_sign_up_activates_once_after_the_exchange(running: Running) -> None:
    browser, shop = running.browser, running.shop_url
    user_id, link = running.sign_up("ada@example.com")
    assert 'id="status">pending<' in running.account(user_id)

    # Another person types a success URL without a fresh code: nothing happens.
    forged = browser.get(f"{shop}/activated", params={"link_id": "x", "code": "made-up"})
    assert forged.status_code == 400
    assert "not_found" in forged.text
    assert 'id="status">pending<' in running.account(user_id)

    landed = browser.get(link)
    assert landed.status_code == 200, landed.text
    assert urlsplit(str(landed.url)).path == "/activated"
    assert "Your account is active" in landed.text
    activated_at = running.store.users[user_id].activated_at
    assert activated_at is not None
    assert 'id="status">active<' in running.account(user_id)

    # The success URL replayed (history, a shared screenshot): the code is spent.
    replayed = browser.get(landed.url)
    assert replayed.status_code == 400
    assert "code_used" in replayed.text
    assert running.store.users[user_id].activated_at == activated_at

    # The mailed link followed again: the service says used, the shop says so.
    again = browser.get(link)
    assert urlsplit(str(again.url)).path == "/activation-failed"
    assert parse_qs(urlsplit(str(again.url)).query)["error"] == ["used"]


def test_a_voucher_is_used_once_and_a_cancelled_order_vetoes_it(running: Running) -> None:
    browser, shop, store = running.browser, running.shop_url, running.store
    user_id, activation = running.sign_up("bob@example.com")
    browser.get(activation)

    ordered = browser.post(f"{shop}/users/{user_id}/orders")
    voucher_link = running.mailed_link(ordered)
    (voucher,) = (v for v in store.vouchers.values() if v.user_id == user_id)
    applied = browser.get(voucher_link)
    assert urlsplit(str(applied.url)).path == "/voucher/applied", applied.text
    assert applied.status_code == 200
    assert store.vouchers[voucher.id].used_at is not None

    # A second mail of the same voucher mints a new link, but the voucher's one
    # use (once_key) is spent: the service refuses it before asking the shop.
    remailed = browser.post(f"{shop}/vouchers/{voucher.id}/mail")
    second = browser.get(running.mailed_link(remailed))
    assert urlsplit(str(second.url)).path == "/voucher/refused"
    assert parse_qs(urlsplit(str(second.url)).query)["error"] == ["used"]

    # An order cancelled before its voucher is used: the shop's webhook vetoes.
    ordered = browser.post(f"{shop}/users/{user_id}/orders")
    cancelled_link = running.mailed_link(ordered)
    order_id = [o.id for o in store.orders.values() if o.user_id == user_id][-1]
    assert browser.post(f"{shop}/orders/{order_id}/cancel").status_code == 200
    vetoed = browser.get(cancelled_link)
    query = parse_qs(urlsplit(str(vetoed.url)).query)
    assert urlsplit(str(vetoed.url)).path == "/voucher/refused"
    assert (query["error"], query["reason"]) == (["rejected"], ["order_cancelled"])
    assert vetoed.status_code == 409
    assert "order_cancelled" in vetoed.text

    # The use was given back: the link is still good, and nothing was recorded.
    token = urlsplit(cancelled_link).path.rsplit("/", 1)[1]
    inspection = running.links.inspect(token)
    assert (inspection.valid, inspection.reason) == (True, None)
    assert running.links.status(query["link_id"][0]).uses == 0
    cancelled_voucher = next(v for v in store.vouchers.values() if v.order_id == order_id)
    assert cancelled_voucher.used_at is None
