"""Finishing the flow in the caller's app: the exchange of a success's ``code``, typed codes."""

from __future__ import annotations

from fastapi import APIRouter

from service import metrics, request_context
from service.api import examples
from service.api.deps import ClientDep, StateDep
from service.api.json_body import JsonRoute
from service.api.openapi import CLIENT_API, JSON_BODY, ProblemCode, operation
from service.api.routes import SERVING_APP
from service.audit import redemption_out
from service.errors import (
    CodeExpired,
    CodeLocked,
    CodeNotEnabled,
    CodeUsed,
    NotFound,
    WrongCode,
)
from service.exchange import exchange
from service.redeem import utcnow
from service.schemas import CodeRedeemRequest, ExchangeRequest, RedemptionOut
from service.typed_code import REFUSALS

router = APIRouter(
    prefix="/v1",
    tags=["redemptions"],
    route_class=JsonRoute,
    dependency_overrides_provider=SERVING_APP,
)

NOT_FOUND = (NotFound.status, NotFound.code, NotFound.title)
NOT_A_CODE = ProblemCode(
    *NOT_FOUND,
    "Not an exchange code of this client: tampered, another client's, a link token, "
    "or one whose redemption is gone.",
)
NOT_A_LINK = ProblemCode(*NOT_FOUND, "Not a link token of this client.")
# The redemption's own outcomes, each with the word the link's redirect would carry.
LINK_REFUSALS = [
    ProblemCode(status, outcome.value, title, meaning[:1].upper() + meaning[1:] + ".")
    for outcome, (status, title, meaning) in REFUSALS.items()
]


@router.post(
    "/redemptions/exchange",
    **operation(
        "exchangeRedemption",
        "Exchange a success redirect's code",
        problems=(*CLIENT_API, *JSON_BODY, NOT_A_CODE, CodeUsed, CodeExpired),
        request_example=examples.EXCHANGE_REQUEST,
        response_example=examples.EXCHANGED,
    ),
)
async def exchange_code(
    request: ExchangeRequest, client: ClientDep, state: StateDep
) -> RedemptionOut:
    """Trade the `code` of a success redirect for its redemption, with `exchanged_at`
    set: once per code, within 300 s of the redemption.

    Do this server to server before acting in the browser (a session, a voucher
    shown): `link_id` and `redemption_id` in the URL are no proof, the code is. Of
    any number of concurrent exchanges of one code exactly one answers 200.
    """
    entry = await exchange(state.store, state.codec, client.id, request.code, utcnow())
    request_context.annotate(link_id=entry.redemption.link_id)
    return redemption_out(entry)


@router.post(
    "/links/redeem",
    **operation(
        "redeemLinkCode",
        "Redeem a link with its typed code",
        problems=(
            *CLIENT_API,
            *JSON_BODY,
            NOT_A_LINK,
            CodeNotEnabled,
            WrongCode,
            CodeLocked,
            *LINK_REFUSALS,
        ),
        request_example=examples.TYPED_CODE_REQUEST,
        response_example=examples.TYPED,
    ),
)
async def redeem_typed_code(
    request: CodeRedeemRequest, client: ClientDep, state: StateDep
) -> RedemptionOut:
    """Redeem a link minted with a `code` by the 6 digits a person typed, instead of
    following it (another device, a mail app that breaks links). The caller's
    backend kept the link's `token` and sends both.

    The same claim as following the link: same counter and once key, the audit
    row with `via: "code"`, the webhook and the `sync` veto. A refusal's `code` is
    the word the link's redirect would carry in `error=`. After 5 wrong codes for
    one link its typed code is locked (`429 code_locked`); its URL still works.
    """
    try:
        result = await state.code_door.redeem(client.id, request.token, request.code)
    except (WrongCode, CodeLocked) as refused:
        metrics.auth_failed("typed_code")
        request_context.annotate(outcome=refused.code)
        raise
    metrics.redemption(result.outcome.value)
    request_context.annotate(
        link_id=result.link.link_id if result.link else None, outcome=result.outcome.value
    )
    return redemption_out(await state.code_door.answer(result))
