"""``/v1/links``: minting, for a client's backend."""

from __future__ import annotations

from fastapi import APIRouter

from service import metrics, request_context
from service.api.deps import ClientDep, StateDep
from service.api.json_body import JsonRoute
from service.api.openapi import problem_responses
from service.schemas import BatchRequest, BatchResponse, LinkRequest, LinkResponse

router = APIRouter(
    prefix="/v1/links",
    tags=["links"],
    responses=problem_responses(400, 401, 413, 422, 503),
    route_class=JsonRoute,
)


@router.post("", status_code=201)
async def mint_link(request: LinkRequest, client: ClientDep, state: StateDep) -> LinkResponse:
    link = state.minter.mint(client, request)
    metrics.link_minted(client.id, request.action)
    request_context.annotate(link_id=link.id)
    return link


@router.post("/batch", status_code=201)
async def mint_links(request: BatchRequest, client: ClientDep, state: StateDep) -> BatchResponse:
    links = state.minter.mint_batch(client, request.links)
    metrics.links_minted(client.id, (link.action for link in links))
    return BatchResponse(links=links)
