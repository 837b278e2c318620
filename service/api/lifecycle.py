"""`/v1/links/{id}`, `/v1/links/inspect`, `/v1/revocations`: take links back, look at them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from starlette.convertors import Convertor, register_url_convertor

from service import lifecycle
from service.api.deps import ClientDep, StateDep
from service.api.json_body import JsonRoute
from service.api.openapi import problem_responses
from service.schemas import (
    InspectRequest,
    InspectResponse,
    LinkStatus,
    SubjectRevocationOut,
    SubjectRevocationRequest,
)
from service.tokens import LINK_ID_REGEX


class LinkIdConvertor(Convertor[str]):
    """Routes ``/v1/links/{link_id}`` only for strings shaped like a link id.

    So ``/v1/links/batch`` and ``/v1/links/inspect`` belong to their own routes
    for every method: a GET there is a 405 naming POST, not a lookup of the
    link id "batch". Anything else that is no link id is a 404 as before.
    """

    regex = LINK_ID_REGEX

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("link_id", LinkIdConvertor())
LinkId = Annotated[str, Path(pattern=f"^{LINK_ID_REGEX}$")]

router = APIRouter(
    prefix="/v1",
    tags=["lifecycle"],
    responses=problem_responses(401, 503),
    route_class=JsonRoute,
)


@router.post("/links/inspect", responses=problem_responses(400, 413, 422))
async def inspect_link(
    request: InspectRequest, client: ClientDep, state: StateDep
) -> InspectResponse:
    return await lifecycle.inspect(state.redeemer, client.id, request.token)


@router.get("/links/{link_id:link_id}", responses=problem_responses(404))
async def link_status(link_id: LinkId, client: ClientDep, state: StateDep) -> LinkStatus:
    return await lifecycle.link_status(state.store, state.codec, client.id, link_id)


@router.delete("/links/{link_id:link_id}", status_code=204, responses=problem_responses(404))
async def revoke_link(link_id: LinkId, client: ClientDep, state: StateDep) -> Response:
    await lifecycle.revoke_link(state.store, state.codec, client.id, link_id)
    return Response(status_code=204)


@router.post("/revocations", status_code=201, responses=problem_responses(400, 413, 422))
async def revoke_subject(
    request: SubjectRevocationRequest, client: ClientDep, state: StateDep
) -> SubjectRevocationOut:
    return await lifecycle.revoke_subject(state.store, client, request)
