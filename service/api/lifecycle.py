"""`/v1/links/{id}`, `/v1/links/inspect`, `/v1/revocations`: take links back, look at them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from starlette.convertors import Convertor, register_url_convertor

from service import lifecycle
from service.api import examples
from service.api.deps import ClientDep, StateDep
from service.api.json_body import JsonRoute
from service.api.openapi import CLIENT_API, JSON_BODY, operation
from service.api.routes import SERVING_APP
from service.errors import NotFound, UnknownAction
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
    prefix="/v1", tags=["links"], route_class=JsonRoute, dependency_overrides_provider=SERVING_APP
)


@router.post(
    "/links/inspect",
    **operation(
        "inspectLink",
        "Check a token without using it",
        problems=(*CLIENT_API, *JSON_BODY),
        request_example=examples.INSPECT_REQUEST,
        response_example=examples.INSPECTED,
    ),
)
async def inspect_link(
    request: InspectRequest, client: ClientDep, state: StateDep
) -> InspectResponse:
    """What following the link would answer now (`reason`: `invalid`, `disabled`,
    `expired`, `revoked` or `used`, in that order of precedence), and the link's
    claims. Nothing is redeemed or recorded. A token of another client answers
    like a forged one: `valid: false, reason: "invalid", link: null`.
    """
    return await lifecycle.inspect(state.redeemer, client.id, request.token)


@router.get(
    "/links/{link_id:link_id}",
    **operation(
        "getLinkStatus",
        "How often a link was used",
        problems=(*CLIENT_API, NotFound),
        response_example=examples.LINK_STATUS,
    ),
)
async def link_status(link_id: LinkId, client: ClientDep, state: StateDep) -> LinkStatus:
    """A link never redeemed answers `uses: 0` and null times. An id this client
    never minted, another client's included, answers 404.
    """
    return await lifecycle.link_status(state.store, state.codec, client.id, link_id)


@router.delete(
    "/links/{link_id:link_id}",
    **operation("revokeLink", "Revoke one link", status=204, problems=(*CLIENT_API, NotFound)),
)
async def revoke_link(link_id: LinkId, client: ClientDep, state: StateDep) -> Response:
    """From now on the link redeems to `error=revoked`. Idempotent: revoking it
    again answers 204 too.
    """
    await lifecycle.revoke_link(state.store, state.codec, client.id, link_id)
    return Response(status_code=204)


@router.post(
    "/revocations",
    **operation(
        "revokeSubject",
        "Revoke every link of a subject",
        status=201,
        problems=(*CLIENT_API, *JSON_BODY, UnknownAction),
        request_example=examples.REVOCATION_REQUEST,
        response_example=examples.REVOCATION,
    ),
)
async def revoke_subject(
    request: SubjectRevocationRequest, client: ClientDep, state: StateDep
) -> SubjectRevocationOut:
    """Every link of this client for the subject (and the action, when given)
    minted before `revoked_at` redeems to `error=revoked`; links minted afterwards
    work.
    """
    return await lifecycle.revoke_subject(state.store, client, request)
