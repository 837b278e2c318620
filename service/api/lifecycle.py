"""`/v1/links/{id}`, `/v1/links/inspect`, `/v1/revocations`: take links back, look at them."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service import lifecycle
from service.api.deps import ClientDep, SessionDep, StateDep
from service.api.openapi import problem_responses
from service.schemas import (
    InspectRequest,
    InspectResponse,
    LinkStatus,
    SubjectRevocationOut,
    SubjectRevocationRequest,
)

router = APIRouter(prefix="/v1", tags=["lifecycle"], responses=problem_responses(401, 503))


@router.post("/links/inspect", responses=problem_responses(400, 413, 422))
async def inspect_link(
    request: InspectRequest, client: ClientDep, state: StateDep, session: SessionDep
) -> InspectResponse:
    return await lifecycle.inspect(session, state.redeemer, client.id, request.token)


@router.get("/links/{link_id}", responses=problem_responses(404))
async def link_status(
    link_id: str, client: ClientDep, state: StateDep, session: SessionDep
) -> LinkStatus:
    return await lifecycle.link_status(session, state.codec, client.id, link_id)


@router.delete("/links/{link_id}", status_code=204, responses=problem_responses(404))
async def revoke_link(
    link_id: str, client: ClientDep, state: StateDep, session: SessionDep
) -> Response:
    await lifecycle.revoke_link(session, state.codec, client.id, link_id)
    await session.commit()
    return Response(status_code=204)


@router.post("/revocations", status_code=201, responses=problem_responses(400, 413, 422))
async def revoke_subject(
    request: SubjectRevocationRequest, client: ClientDep, session: SessionDep
) -> SubjectRevocationOut:
    revoked = await lifecycle.revoke_subject(session, client, request)
    await session.commit()
    return revoked
