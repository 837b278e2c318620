"""``Client``: the client API over a blocking httpx client.

Each method builds its operation's ``Call`` and sends it through ``_run``,
the only code here that does I/O; ``AsyncClient`` is the same with ``await``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
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


class Client:
    """A client's backend talking to Action Links with one API key.

    ``base_url`` is the service's origin (``https://links.example.com``);
    ``timeout`` bounds each attempt, in seconds; ``retry`` says how idempotent
    calls are repeated (``RetryPolicy(attempts=1)``: never). Use it as a
    context manager, or call ``close()``, to release its connections.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._http = httpx.Client(**http_options(base_url, api_key, timeout))
        self._retry = retry or RetryPolicy()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.send(call.request(self._http))
            except httpx.TransportError as exc:
                outcome = exc
            step = settle(call, outcome, attempt, self._retry)
            if not isinstance(step, Wait):
                return step
            time.sleep(step.seconds)
            attempt += 1

    # --- links -----------------------------------------------------------------

    def mint(
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
        """Mint one link (``POST /v1/links``); arguments left None take the action's defaults.

        Never retried: a repeat would mint a second link.
        """
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
        return self._run(ops.mint(request))

    def mint_batch(self, items: Iterable[MintRequest | Mapping[str, Any]]) -> list[Link]:
        """Mint 1 to 1000 links at once, all or none, in the order given. Never retried."""
        return self._run(ops.mint_batch(items))

    def status(self, link_id: str) -> LinkStatus:
        """Uses so far and revocation of one of this client's links."""
        return self._run(ops.status(link_id))

    def revoke(self, link_id: str) -> None:
        """Revoke one link; revoking it again is harmless."""
        self._run(ops.revoke(link_id))

    def revoke_subject(self, subject: str, action: str | None = None) -> None:
        """Revoke every link minted so far for ``subject`` (of ``action`` only, if given).

        Never retried: a repeat would also revoke links minted in between.
        """
        self._run(ops.revoke_subject(subject, action))

    def inspect(self, token: str) -> Inspection:
        """Whether ``token`` would redeem now, and what it carries; redeems nothing."""
        return self._run(ops.inspect(token))

    # --- redemptions -----------------------------------------------------------

    def redemption(self, redemption_id: str) -> Redemption:
        """One entry of the audit log."""
        return self._run(ops.redemption(redemption_id))

    def redemptions(
        self,
        link_id: str | None = None,
        subject: str | None = None,
        action: str | None = None,
        *,
        page_size: int | None = None,
    ) -> Iterator[Redemption]:
        """The audit log, newest first, fetched a page at a time as the iterator advances."""
        pager = ops.RedemptionPager(link_id, subject, action, page_size)
        while (call := pager.next_call()) is not None:
            yield from pager.take(self._run(call))

    def redeliver(self, redemption_id: str) -> None:
        """Queue a redemption's webhook again (same ``webhook-id``)."""
        self._run(ops.redeliver(redemption_id))

    # --- finishing the flow ----------------------------------------------------

    def exchange(self, code: str) -> Redemption:
        """Trade the success redirect's ``code`` for its redemption, once. Never retried."""
        return self._run(ops.exchange(code))

    def redeem_code(self, token: str, code: str) -> Redemption:
        """Redeem a link with the code a person typed. Never retried."""
        return self._run(ops.redeem_code(token, code))

    def resend(self, hint: str) -> Link:
        """A new link for the expired one whose failure redirect carried ``resend=hint``.

        Never retried: a repeat would mint a second link.
        """
        return self._run(ops.resend(hint))
