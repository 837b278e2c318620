"""Every operation of the client API as a ``Call``: its route, body and reader.

Ids go into paths percent-encoded whole, so no id can reach another route.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from action_links_client._call import Call
from action_links_client._models import (
    Inspection,
    Link,
    LinkStatus,
    MintRequest,
    Redemption,
    RedemptionPage,
)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _nothing(_body: Any) -> None:
    return None


def _links(body: Any) -> list[Link]:
    return [Link.from_json(item) for item in body["links"]]


def mint(request: MintRequest) -> Call[Link]:
    return Call("POST", "/v1/links", Link.from_json, body=request.to_json())


def mint_batch(items: Iterable[MintRequest | Mapping[str, Any]]) -> Call[list[Link]]:
    links = [item.to_json() if isinstance(item, MintRequest) else dict(item) for item in items]
    return Call("POST", "/v1/links/batch", _links, body={"links": links})


def status(link_id: str) -> Call[LinkStatus]:
    return Call("GET", f"/v1/links/{_segment(link_id)}", LinkStatus.from_json, idempotent=True)


def revoke(link_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/links/{_segment(link_id)}", _nothing, idempotent=True)


def revoke_subject(subject: str, action: str | None) -> Call[None]:
    body = {"subject": subject} if action is None else {"subject": subject, "action": action}
    return Call("POST", "/v1/revocations", _nothing, body=body)


def inspect(token: str) -> Call[Inspection]:
    body = {"token": token}
    return Call("POST", "/v1/links/inspect", Inspection.from_json, body=body, idempotent=True)


def redemption(redemption_id: str) -> Call[Redemption]:
    path = f"/v1/redemptions/{_segment(redemption_id)}"
    return Call("GET", path, Redemption.from_json, idempotent=True)


class RedemptionPager:
    """The calls of ``GET /v1/redemptions``, page after page, following ``next_cursor``.

    Filters left None are not sent; ``page_size`` is the contract's ``limit``.
    """

    def __init__(
        self,
        link_id: str | None,
        subject: str | None,
        action: str | None,
        page_size: int | None,
    ) -> None:
        filters = {"link_id": link_id, "subject": subject, "action": action, "limit": page_size}
        self._params = {name: str(value) for name, value in filters.items() if value is not None}
        self._cursor: str | None = None
        self._done = False

    def next_call(self) -> Call[RedemptionPage] | None:
        """The call for the next page, or None after the last page."""
        if self._done:
            return None
        params = self._params if self._cursor is None else {**self._params, "cursor": self._cursor}
        return Call(
            "GET", "/v1/redemptions", RedemptionPage.from_json, params=params, idempotent=True
        )

    def take(self, page: RedemptionPage) -> list[Redemption]:
        """The page's items; remembers where the next page starts."""
        self._cursor = page.next_cursor
        self._done = page.next_cursor is None
        return page.items


def redeliver(redemption_id: str) -> Call[None]:
    path = f"/v1/redemptions/{_segment(redemption_id)}/redeliver"
    return Call("POST", path, _nothing, idempotent=True)


def exchange(code: str) -> Call[Redemption]:
    return Call("POST", "/v1/redemptions/exchange", Redemption.from_json, body={"code": code})


def redeem_code(token: str, code: str) -> Call[Redemption]:
    body = {"token": token, "code": code}
    return Call("POST", "/v1/links/redeem", Redemption.from_json, body=body)


def resend(hint: str) -> Call[Link]:
    return Call("POST", "/v1/links/resend", Link.from_json, body={"resend": hint})
