"""``GET /v1/redemptions`` and ``GET /v1/redemptions/{id}``: a client's audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service import audit
from service.api.deps import ClientDep, StateDep
from service.api.openapi import problem_responses
from service.schemas import (
    ACTION_NAME_PATTERN,
    NO_NUL_PATTERN,
    URL_SAFE_ID_PATTERN,
    RedemptionOut,
    RedemptionPage,
)
from service.store import Filters

router = APIRouter(prefix="/v1/redemptions", tags=["audit"], responses=problem_responses(401, 503))


@router.get("", responses=problem_responses(422))
async def list_redemptions(
    client: ClientDep,
    state: StateDep,
    link_id: Annotated[str | None, Query(max_length=64, pattern=URL_SAFE_ID_PATTERN)] = None,
    subject: Annotated[str | None, Query(max_length=200, pattern=NO_NUL_PATTERN)] = None,
    action: Annotated[str | None, Query(pattern=ACTION_NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> RedemptionPage:
    filters = Filters(link_id=link_id, subject=subject, action=action)
    return await audit.list_redemptions(state.store, state.codec, client.id, filters, limit, cursor)


@router.get("/{redemption_id}", responses=problem_responses(404))
async def get_redemption(redemption_id: str, client: ClientDep, state: StateDep) -> RedemptionOut:
    return await audit.get_redemption(state.store, client.id, redemption_id)
