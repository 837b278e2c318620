"""``/v1/links``: minting, for a client's backend."""

from __future__ import annotations

from fastapi import APIRouter

from service import metrics, request_context
from service.api import examples
from service.api.deps import ClientDep, StateDep
from service.api.json_body import JsonRoute
from service.api.openapi import CLIENT_API, JSON_BODY, ProblemCode, operation
from service.errors import PayloadTooLarge, RedirectNotAllowed, TtlTooLong, UnknownAction
from service.schemas import BatchRequest, BatchResponse, LinkRequest, LinkResponse

router = APIRouter(prefix="/v1/links", tags=["links"], route_class=JsonRoute)

MINT_PROBLEMS = (UnknownAction, RedirectNotAllowed, TtlTooLong)


@router.post(
    "",
    **operation(
        "mintLink",
        "Mint one link",
        status=201,
        problems=(*CLIENT_API, *JSON_BODY, *MINT_PROBLEMS),
        request_example=examples.LINK_REQUEST,
        response_example=examples.LINK,
    ),
)
async def mint_link(request: LinkRequest, client: ClientDep, state: StateDep) -> LinkResponse:
    """A signed link for one of this client's actions. Nothing is written to the
    database: everything the link needs travels inside its token. Two mints of the
    same request give two different links. With `supersede` (the one mint that
    writes, one statement), every earlier link of this client for the same subject
    and action redeems to `error=revoked` from now on.
    """
    link = await state.minter.mint(client, request)
    metrics.link_minted(client.id, request.action)
    request_context.annotate(link_id=link.id)
    return link


@router.post(
    "/batch",
    **operation(
        "mintLinks",
        "Mint up to 1000 links at once",
        status=201,
        problems=(
            *CLIENT_API,
            *JSON_BODY,
            # One bad item refuses the whole batch with 422 and that item's code.
            *(ProblemCode.of(error, status=422) for error in (*MINT_PROBLEMS, PayloadTooLarge)),
        ),
        request_example=examples.BATCH_REQUEST,
        response_example=examples.BATCH,
    ),
)
async def mint_links(request: BatchRequest, client: ClientDep, state: StateDep) -> BatchResponse:
    """The links of 1 to 1000 mint requests, in the same order. Validation is
    all-or-nothing: one bad item answers 422 with the first bad item's `code` and
    an `errors` list whose entries name each bad item's `index`.
    """
    links = await state.minter.mint_batch(client, request.links)
    metrics.links_minted(client.id, (link.action for link in links))
    return BatchResponse(links=links)
