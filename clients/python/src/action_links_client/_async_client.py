"""``AsyncClient``: ``Client``'s API over an asyncio httpx client, every call awaited.

Each method builds the same ``Call`` as ``Client``'s and awaits ``_run``;
see ``Client`` for what each operation does and which are retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from action_links_client import _operations as ops
from action_links_client._call import Call, Wait, http_options, settle
from action_links_client._models import (
    Inspection,
    Link,
    LinkStatus,
    MintRequest,
    Redemption,
)
from action_links_client._retry import RetryPolicy

T = TypeVar("T")


class AsyncClient:
    """``Client`` for asyncio: the same arguments and methods, awaited.

    Use it as ``async with``, or ``await close()``; ``redemptions`` is an
    async iterator (``async for``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(**http_options(base_url, api_key, timeout))
        self._retry = retry or RetryPolicy()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._http.send(call.request(self._http))
            except httpx.TransportError as exc:
                outcome = exc
            step = settle(call, outcome, attempt, self._retry)
            if not isinstance(step, Wait):
                return step
            await asyncio.sleep(step.seconds)
            attempt += 1

    # --- links -----------------------------------------------------------------

    async def mint(
        self,
        action: str,
        *,
        subject: str | None = None,
        data: Any = None,
        expires_in: int | None = None,
        max_uses: int | None = None,
        once_key: str | None = None,
        success_url: str | None = None,
        failure_url: str | None = None,
        code: bool | None = None,
        supersede: bool = False,
    ) -> Link:
        """As ``Client.mint``."""
        request = MintRequest(
            action,
            subject=subject,
            data=data,
            expires_in=expires_in,
            max_uses=max_uses,
            once_key=once_key,
            success_url=success_url,
            failure_url=failure_url,
            code=code,
            supersede=supersede,
        )
        return await self._run(ops.mint(request))

    async def mint_batch(self, items: Iterable[MintRequest | Mapping[str, Any]]) -> list[Link]:
        """As ``Client.mint_batch``."""
        return await self._run(ops.mint_batch(items))

    async def status(self, link_id: str) -> LinkStatus:
        """As ``Client.status``."""
        return await self._run(ops.status(link_id))

    async def revoke(self, link_id: str) -> None:
        """As ``Client.revoke``."""
        await self._run(ops.revoke(link_id))

    async def revoke_subject(self, subject: str, action: str | None = None) -> None:
        """As ``Client.revoke_subject``."""
        await self._run(ops.revoke_subject(subject, action))

    async def inspect(self, token: str) -> Inspection:
        """As ``Client.inspect``."""
        return await self._run(ops.inspect(token))

    # --- redemptions -----------------------------------------------------------

    async def redemption(self, redemption_id: str) -> Redemption:
        """As ``Client.redemption``."""
        return await self._run(ops.redemption(redemption_id))

    async def redemptions(
        self,
        link_id: str | None = None,
        subject: str | None = None,
        action: str | None = None,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Redemption]:
        """As ``Client.redemptions``."""
        pager = ops.RedemptionPager(link_id, subject, action, page_size)
        while (call := pager.next_call()) is not None:
            for redemption in pager.take(await self._run(call)):
                yield redemption

    async def redeliver(self, redemption_id: str) -> None:
        """As ``Client.redeliver``."""
        await self._run(ops.redeliver(redemption_id))

    # --- finishing the flow ----------------------------------------------------

    async def exchange(self, code: str) -> Redemption:
        """As ``Client.exchange``."""
        return await self._run(ops.exchange(code))

    async def redeem_code(self, token: str, code: str) -> Redemption:
        """As ``Client.redeem_code``."""
        return await self._run(ops.redeem_code(token, code))

    async def resend(self, hint: str) -> Link:
        """As ``Client.resend``."""
        return await self._run(ops.resend(hint))
