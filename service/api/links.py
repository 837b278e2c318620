"""``/v1/links``: minting, for a client's backend."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.security.utils import get_authorization_scheme_param
from starlette.responses import Response

from service import metrics, request_context
from service.api import examples
from service.api.deps import ClientDep, StateDep
from service.api.direct import ClientRoute
from service.api.openapi import CLIENT_API, JSON_BODY, ProblemCode, operation
from service.api.routes import SERVING_APP
from service.errors import (
    NotFound,
    PayloadTooLarge,
    RedirectNotAllowed,
    ResendExpired,
    TtlTooLong,
    UnknownAction,
)
from service.redeem import utcnow
from service.resend import replacement_request
from service.schemas import (
    BatchRequest,
    BatchResponse,
    LinkRequest,
    LinkResponse,
    ResendRequest,
)

router = APIRouter(
    prefix="/v1/links",
    tags=["links"],
    route_class=ClientRoute,
    dependency_overrides_provider=SERVING_APP,
)

MINT_PROBLEMS = (UnknownAction, RedirectNotAllowed, TtlTooLong)
NOT_A_HINT = ProblemCode(
    NotFound.status,
    NotFound.code,
    NotFound.title,
    "Not a resend hint of this client: tampered, another client's, or a link token.",
)


def created(body: Any) -> Response:
    """A 201 with ``body`` as JSON, encoded here: FastAPI would validate the answer again
    against its model and then encode it, which cost a batch of 100 more than signing
    its links (bench/README.md). The decorators still name the model (``response_model``):
    the OpenAPI document is unchanged. Datetimes as pydantic writes them (``…Z``)."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_UTC_Z),
        status_code=201,
        media_type="application/json",
    )


def _minting(http: Request, state: StateDep, links: int) -> None:
    """Count ``links`` towards the key's mint limit (``RATE_LIMIT_MINTS``), or refuse them.

    The key is read off the header that ``ClientDep`` accepted, not through a second
    credentials dependency: FastAPI solves each dependency again per request, cached
    or not, and that cost every mint more than the limit itself.
    """
    if state.limits.mints.enabled:
        _, key = get_authorization_scheme_param(http.headers.get("authorization"))
        state.limits.mints.take(key, links)


@router.post(
    "",
    response_model=LinkResponse,
    **operation(
        "mintLink",
        "Mint one link",
        status=201,
        problems=(*CLIENT_API, *JSON_BODY, *MINT_PROBLEMS),
        request_example=examples.LINK_REQUEST,
        response_example=examples.LINK,
    ),
)
async def mint_link(
    request: LinkRequest, client: ClientDep, state: StateDep, http: Request
) -> Response:
    """A signed link for one of this client's actions. Nothing is written to the
    database: everything the link needs travels inside its token. Two mints of the
    same request give two different links. With `supersede` (the one mint that
    writes, one statement), every earlier link of this client for the same subject
    and action redeems to `error=revoked` from now on.
    """
    _minting(http, state, 1)
    link = await state.minter.mint(client, request)
    metrics.link_minted(client.id, request.action)
    request_context.annotate(link_id=link["id"])
    return created(link)


@router.post(
    "/batch",
    response_model=BatchResponse,
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
async def mint_links(
    request: BatchRequest, client: ClientDep, state: StateDep, http: Request
) -> Response:
    """The links of 1 to 1000 mint requests, in the same order. Validation is
    all-or-nothing: one bad item answers 422 with the first bad item's `code` and
    an `errors` list whose entries name each bad item's `index`.
    """
    _minting(http, state, len(request.links))
    links = await state.minter.mint_batch(client, request.links)
    metrics.links_minted(client.id, (link["action"] for link in links))
    return created({"links": links})


@router.post(
    "/resend",
    response_model=LinkResponse,
    **operation(
        "resendLink",
        "Mint the replacement of an expired link",
        status=201,
        problems=(*CLIENT_API, *JSON_BODY, NOT_A_HINT, ResendExpired, *MINT_PROBLEMS),
        request_example=examples.RESEND_REQUEST,
        response_example=examples.LINK,
    ),
)
async def resend_link(
    request: ResendRequest, client: ClientDep, state: StateDep, http: Request
) -> Response:
    """A new link for the one whose `error=expired` failure redirect carried this
    `resend` hint: the old link's action, subject, data, `once_key`, `max_uses`,
    redirect URLs and `code` setting, with the action's default lifetime. Mailing it
    is the caller's job. Nothing is written (`supersede` is not carried over).

    A hint is good for 7 days (then `410 resend_expired`). The action must still
    exist and be enabled, as for any mint.
    """
    replacement = replacement_request(state.codec, client.id, request.resend, utcnow())
    _minting(http, state, 1)
    link = await state.minter.mint(client, replacement, exact_max_uses=True)
    metrics.link_minted(client.id, replacement.action)
    request_context.annotate(link_id=link["id"])
    return created(link)
