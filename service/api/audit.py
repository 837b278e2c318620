"""``GET /v1/redemptions`` and ``GET /v1/redemptions/{id}``: a client's audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.convertors import Convertor, register_url_convertor

from service import audit
from service.api import examples
from service.api.deps import ClientDep, StateDep
from service.api.openapi import CLIENT_API, operation
from service.api.routes import SERVING_APP
from service.errors import NotFound, ValidationFailed
from service.schemas import (
    ACTION_NAME_PATTERN,
    NO_NUL_PATTERN,
    URL_SAFE_ID_PATTERN,
    RedemptionOut,
    RedemptionPage,
)
from service.store import Filters


class RedemptionIdConvertor(Convertor[str]):
    """Routes ``/v1/redemptions/{redemption_id}`` for any id but ``exchange``.

    So ``/v1/redemptions/exchange`` belongs to its own route for every method
    (a GET there is a 405 naming POST, not a lookup of the redemption
    "exchange"); every other string is looked up (and answered 404) as before.
    """

    regex = "(?!exchange$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("redemption_id", RedemptionIdConvertor())

router = APIRouter(
    prefix="/v1/redemptions", tags=["redemptions"], dependency_overrides_provider=SERVING_APP
)


@router.get(
    "",
    **operation(
        "listRedemptions",
        "List redemptions, newest first",
        problems=(*CLIENT_API, ValidationFailed),
        response_example=examples.REDEMPTION_PAGE,
    ),
)
async def list_redemptions(
    client: ClientDep,
    state: StateDep,
    link_id: Annotated[str | None, Query(max_length=64, pattern=URL_SAFE_ID_PATTERN)] = None,
    subject: Annotated[str | None, Query(max_length=200, pattern=NO_NUL_PATTERN)] = None,
    action: Annotated[str | None, Query(pattern=ACTION_NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024, pattern=NO_NUL_PATTERN)] = None,
) -> RedemptionPage:
    """This client's audit log, optionally filtered, in pages of `limit`. Pass
    `next_cursor` as `cursor` (with the same filters) for the next page; it is
    null on the last one. Redemptions arriving meanwhile never shift rows
    between pages.
    """
    filters = Filters(link_id=link_id, subject=subject, action=action)
    return await audit.list_redemptions(state.store, state.codec, client.id, filters, limit, cursor)


@router.get(
    "/{redemption_id:redemption_id}",
    **operation(
        "getRedemption",
        "One redemption",
        problems=(*CLIENT_API, NotFound),
        response_example=examples.REDEMPTION,
    ),
)
async def get_redemption(redemption_id: str, client: ClientDep, state: StateDep) -> RedemptionOut:
    """One redemption of this client, with its webhook delivery's state."""
    return await audit.get_redemption(state.store, client.id, redemption_id)
