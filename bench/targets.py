"""The two systems under test, behind one interface: how to mint, redeem, inspect.

``ServiceTarget`` is Action Links, set up through its admin API like any
operator would (a client, a key, an action ``go`` and, given a webhook URL,
an async action ``hook``). ``BaselineTarget`` is ``bench/baseline.py``. Both mint the same
request body and are redeemed through ``/r/<token>``; tokens for the loads
are minted through each system's own batch endpoint.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.servers import Server
from bench.wrk import Load

SHOP = "https://shop.example"
CLIENT_ID = "bench"
# The body of one mint: a subject and a little data, like a real caller's.
MINT_BODY: dict[str, Any] = {
    "action": "go",
    "subject": "user-12345",
    "data": {"order": 12345, "plan": "pro"},
}
MINT_CHUNK = 1000  # links per batch request when minting tokens for a load


class Target(Protocol):
    label: str
    server: Server

    def mint_load(self) -> Load: ...
    def batch_load(self, size: int) -> Load: ...
    def mint_tokens(self, count: int, action: str = "go") -> list[str]: ...
    def redeem_path(self, token: str, webhook: bool = False) -> str: ...
    def inspect_load(self, lines: Path) -> Load: ...


def _json_headers(token: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}


async def _mint_chunks(
    base_url: str,
    path: str,
    headers: dict[str, str],
    items: list[dict[str, Any]],
    count: int,
) -> list[str]:
    """``count`` tokens from a batch endpoint, two requests in flight (the service has 2 cores)."""
    tokens: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=headers) as http:

        async def one(size: int) -> list[str]:
            response = await http.post(path, json={"links": items * size})
            response.raise_for_status()
            return [link["token"] for link in response.json()["links"]]

        sizes = [MINT_CHUNK] * (count // MINT_CHUNK)
        if count % MINT_CHUNK:
            sizes.append(count % MINT_CHUNK)
        for start in range(0, len(sizes), 2):
            for chunk in await asyncio.gather(*(one(s) for s in sizes[start : start + 2])):
                tokens.extend(chunk)
    return tokens


def redeem_once(http: httpx.Client, path: str) -> str:
    """Redeem one link and return where it sent us (the Location header)."""
    response = http.get(path, follow_redirects=False)
    if response.status_code != 303:
        raise RuntimeError(f"redeeming {path[:20]}… answered {response.status_code}")
    return response.headers["location"]


@dataclass
class ServiceTarget:
    label: str
    server: Server
    admin_token: str
    webhook_url: str | None = None
    api_key: str = ""

    def setup(self) -> None:
        admin = {"Authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(base_url=self.server.base_url, headers=admin, timeout=30) as http:
            client: dict[str, Any] = {
                "id": CLIENT_ID,
                "name": "Benchmark",
                "allowed_redirects": [f"{SHOP}/"],
            }
            if self.webhook_url is not None:
                client["webhook_url"] = self.webhook_url
            http.post("/v1/admin/clients", json=client).raise_for_status()
            key = http.post(f"/v1/admin/clients/{CLIENT_ID}/keys")
            key.raise_for_status()
            self.api_key = key.json()["key"]
            action = {"success_url": f"{SHOP}/welcome", "failure_url": f"{SHOP}/oops"}
            http.put(f"/v1/admin/clients/{CLIENT_ID}/actions/go", json=action).raise_for_status()
            if self.webhook_url is not None:  # an async action needs the client's webhook
                http.put(
                    f"/v1/admin/clients/{CLIENT_ID}/actions/hook",
                    json={**action, "delivery": "async"},
                ).raise_for_status()

    @property
    def headers(self) -> dict[str, str]:
        return _json_headers(self.api_key)

    def mint_load(self) -> Load:
        return Load("/v1/links", "POST", json.dumps(MINT_BODY), self.headers)

    def batch_load(self, size: int) -> Load:
        body = json.dumps({"links": [MINT_BODY] * size})
        return Load("/v1/links/batch", "POST", body, self.headers)

    def mint_tokens(self, count: int, action: str = "go") -> list[str]:
        item = {**MINT_BODY, "action": action}
        return asyncio.run(
            _mint_chunks(self.server.base_url, "/v1/links/batch", self.headers, [item], count)
        )

    def redeem_path(self, token: str, webhook: bool = False) -> str:
        return f"/r/{token}"

    def inspect_load(self, lines: Path) -> Load:
        body = '{"token": "{line}"}'
        return Load("/v1/links/inspect", "POST", body, self.headers, lines=lines)


@dataclass
class BaselineTarget:
    label: str
    server: Server
    api_token: str

    @property
    def headers(self) -> dict[str, str]:
        return _json_headers(self.api_token)

    def mint_load(self) -> Load:
        return Load("/links", "POST", json.dumps(MINT_BODY), self.headers)

    def batch_load(self, size: int) -> Load:
        return Load("/links/batch", "POST", json.dumps({"links": [MINT_BODY] * size}), self.headers)

    def mint_tokens(self, count: int, action: str = "go") -> list[str]:
        item = {**MINT_BODY, "action": action}
        return asyncio.run(
            _mint_chunks(self.server.base_url, "/links/batch", self.headers, [item], count)
        )

    def redeem_path(self, token: str, webhook: bool = False) -> str:
        return f"/w/{token}" if webhook else f"/r/{token}"

    def inspect_load(self, lines: Path) -> Load:
        return Load("/inspect", "POST", '{"token": "{line}"}', self.headers, lines=lines)
