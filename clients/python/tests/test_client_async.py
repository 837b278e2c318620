"""``AsyncClient``: the same operations, awaited, against the real service."""

from __future__ import annotations

import time

import httpx
import pytest
from action_links_client import (
    ActionLinksError,
    AsyncClient,
    MintRequest,
    NotFound,
    RetryPolicy,
    TransportError,
    Unauthorized,
)

from tests.support.links import outcome_of, redemption_id_of
from tests.support.processes import free_port
from tests.support.receiver import Answer, Receiver
from tests.support.shop_service import Shop, subject

pytestmark = pytest.mark.slow  # the session's shop: a real service process


async def test_links_from_mint_to_revocation(shop: Shop) -> None:
    who = subject()
    async with shop.async_client() as client:
        link = await client.mint("activate", subject=who, max_uses=2, data=[1])
        assert (link.action, link.subject, link.max_uses) == ("activate", who, 2)
        batch = await client.mint_batch([MintRequest("hook", subject=who), {"action": "activate"}])
        assert [b.action for b in batch] == ["hook", "activate"]
        assert (await client.inspect(link.token)).valid is True
        assert outcome_of(shop.follow(link)) == "success"
        assert (await client.status(link.id)).uses == 1
        await client.revoke(link.id)
        assert (await client.status(link.id)).revoked is True
        await client.revoke_subject(who, action="hook")
        assert (await client.inspect(batch[0].token)).reason == "revoked"
        assert (await client.inspect(batch[1].token)).valid is True


async def test_redemptions_is_an_async_iterator_over_every_page(shop: Shop) -> None:
    who = subject()
    async with shop.async_client() as client:
        link = await client.mint("hook", subject=who, max_uses=3)
        ids = [redemption_id_of(shop.follow(link)) for _ in range(3)]
        listed = [r async for r in client.redemptions(link_id=link.id, page_size=2)]
        assert [r.id for r in listed] == ids[::-1]
        assert await client.redemption(ids[0]) == listed[-1]
        await client.redeliver(ids[0])


async def test_errors_are_the_same_as_the_blocking_clients(shop: Shop) -> None:
    async with AsyncClient(shop.base_url, "alk_" + "y" * 40) as stranger:
        with pytest.raises(Unauthorized):
            await stranger.mint("activate")
    async with shop.async_client() as client:
        with pytest.raises(NotFound):
            await client.redemption("no-such-redemption")
        with pytest.raises(ActionLinksError) as caught:
            await client.mint("no-such-action")
        assert (caught.value.status, caught.value.code) == (422, "unknown_action")
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(nowhere, "alk_key", retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(TransportError) as refused:
            await client.status("abc")
    assert isinstance(refused.value.__cause__, httpx.ConnectError)


async def test_retry_after_is_waited_out() -> None:
    server = Receiver().up()
    problem = {"type": "about:blank", "status": 429, "code": "rate_limited", "detail": "slow"}
    status = {"id": "abc", "uses": 2, "revoked": False}
    server.script = lambda _request, seen: (
        Answer(status=429, json=problem, headers={"Retry-After": "1"})
        if seen == 0
        else Answer(json=status)
    )
    try:
        started = time.monotonic()
        async with AsyncClient(f"http://127.0.0.1:{server.port}", "alk_key") as client:
            assert (await client.status("abc")).uses == 2
        assert time.monotonic() - started >= 1.0
        assert len(server.received) == 2
    finally:
        server.down()


async def test_a_closed_client_sends_nothing(shop: Shop) -> None:
    async with shop.async_client() as client:
        await client.mint("activate")
    with pytest.raises(RuntimeError):
        await client.mint("activate")
