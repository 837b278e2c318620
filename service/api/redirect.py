"""``/r/{token}``: where people arrive. Answers with a redirect or a page, never JSON."""

from __future__ import annotations

import secrets

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from service import metrics, request_context
from service.api.deps import StateDep
from service.pages import LINK_HEADERS, error_page, page_headers
from service.redeem import Outcome, Redemption

router = APIRouter(tags=["redirect"])

# Pages shown when a failure has no failure URL to go to.
FALLBACK_PAGE = {
    Outcome.EXPIRED: "expired",
    Outcome.USED: "used",
    Outcome.REVOKED: "revoked",
    Outcome.DISABLED: "disabled",
    Outcome.REJECTED: "rejected",
    Outcome.UNAVAILABLE: "unavailable",
}


def answer(result: Redemption) -> Response:
    if result.outcome is Outcome.INVALID:
        return error_page("invalid")
    target = result.target_url()
    if target is not None:
        return RedirectResponse(target, status_code=303, headers=LINK_HEADERS)
    if result.outcome is Outcome.SUCCESS:
        return error_page("disabled")  # success with nowhere allowed to go
    headers = {"Retry-After": "5"} if result.outcome is Outcome.UNAVAILABLE else None
    return error_page(FALLBACK_PAGE[result.outcome], headers=headers)


def observe(result: Redemption) -> None:
    """Note the outcome for the access log and count an untrusted token (never the token)."""
    if result.outcome is Outcome.INVALID:
        metrics.auth_failed("link_token")
    link = result.link
    request_context.annotate(
        client_id=link.client_id if link else None,
        link_id=link.link_id if link else None,
        outcome=result.outcome.value,
    )


@router.get("/r/{token:path}", response_class=Response)
@router.post("/r/{token:path}", response_class=Response)
async def redeem_link(token: str, state: StateDep) -> Response:
    result = await state.redeemer.redeem(token)
    metrics.redemption(result.outcome.value)
    observe(result)
    return answer(result)


@router.head("/r/{token:path}", response_class=Response)
async def peek_link(token: str, state: StateDep) -> Response:
    """Never redeems: answers with what a GET would say about the link's state."""
    result = await state.redeemer.inspect(token)
    observe(result)
    if result.outcome is Outcome.SUCCESS:
        headers = page_headers(secrets.token_urlsafe(16))
        return Response(status_code=200, media_type="text/html", headers=headers)
    return answer(result)
