"""A service process with client ``shop`` provisioned, as the Python client's tests use it.

A database of its own; a webhook receiver on 127.0.0.1; and PostgreSQL
reached through a TCP proxy (so a test can take the database away);
``shop`` is created over the admin API as an operator would, with an API
key and the actions in ``ACTIONS``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from action_links_client import AsyncClient, Client, Link

from tests.conftest import PUBLIC_BASE_URL, SHOP_ORIGIN
from tests.support import database
from tests.support.logcheck import remember_secrets
from tests.support.processes import running_service
from tests.support.proxy import TcpProxy
from tests.support.receiver import Receiver
from tests.support.served import ADMIN, service_env

# Action name → its settings (API.md, admin API); success and failure URLs are added.
ACTIONS: dict[str, dict[str, Any]] = {
    "activate": {},  # one use, no webhook
    "hook": {"delivery": "async", "max_uses": None},  # a webhook per use
}


@dataclass
class Shop:
    """The running service as ``shop``'s backend sees it."""

    base_url: str
    api_key: str
    webhook_secret: str
    receiver: Receiver
    proxy: TcpProxy

    def client(self, **options: Any) -> Client:
        return Client(self.base_url, self.api_key, **options)

    def async_client(self, **options: Any) -> AsyncClient:
        return AsyncClient(self.base_url, self.api_key, **options)

    def follow(self, link: Link) -> httpx.Response:
        """A person following the link (the minted URL's path, on this process)."""
        return httpx.get(self.base_url + urlsplit(link.url).path, timeout=10)


def subject() -> str:
    """A subject no other test uses."""
    return f"user-{secrets.token_hex(6)}"


def tampered(value: str) -> str:
    """``value`` with its first character changed (a last base64 character may carry
    no bits, so changing it can leave the decoded bytes as they were)."""
    return ("B" if value[0] == "A" else "A") + value[1:]


@contextmanager
def running_shop(log_dir: Path) -> Iterator[Shop]:
    url = database.create_database()
    parts = urlsplit(url)
    receiver = Receiver().up()
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    userinfo, at, _ = parts.netloc.rpartition("@")
    proxied = urlunsplit(parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{proxy.port}"))
    env = service_env(proxied, 4, PUBLIC_BASE_URL=PUBLIC_BASE_URL)
    try:
        with running_service(env, log_dir) as process:
            api_key, webhook_secret = provision(process.base_url, receiver.url)
            yield Shop(process.base_url, api_key, webhook_secret, receiver, proxy)
    finally:
        proxy.close()
        receiver.down()
        database.drop_database(url)


def provision(base_url: str, webhook_url: str) -> tuple[str, str]:
    """Client ``shop`` with its actions, over the admin API; its API key and webhook secret."""
    with httpx.Client(base_url=base_url, headers=ADMIN, timeout=10) as admin:
        client = {
            "id": "shop",
            "name": "Shop",
            "webhook_url": webhook_url,
            "allowed_redirects": [f"{SHOP_ORIGIN}/"],
        }
        created = admin.post("/v1/admin/clients", json=client)
        assert created.status_code == 201, created.text
        for name, settings in ACTIONS.items():
            body = {
                "success_url": f"{SHOP_ORIGIN}/welcome",
                "failure_url": f"{SHOP_ORIGIN}/oops",
                **settings,
            }
            put = admin.put(f"/v1/admin/clients/shop/actions/{name}", json=body)
            assert put.status_code == 200, put.text
        key = admin.post("/v1/admin/clients/shop/keys")
        assert key.status_code == 201, key.text
    api_key: str = key.json()["key"]
    webhook_secret: str = created.json()["webhook_secret"]
    remember_secrets(api_key, webhook_secret)
    return api_key, webhook_secret
