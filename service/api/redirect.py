"""``/r/{token}``: where people arrive. Answers with a redirect or a page, never JSON.

These are plain Starlette routes, not FastAPI path operations: a link takes no
parameters but its token, and FastAPI's dependency and validation layer cost
about a fifth of a redemption's CPU (bench/README.md). Errors still reach the
app's handlers (service/api/problems.py).
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.pages import LINK_HEADERS, error_page, page_headers
from service.redeem import Outcome, Redemption
from service.state import AppState

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


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.services
    return state


async def redeem_link(request: Request) -> Response:
    return answer(await _state(request).redeemer.redeem(request.path_params["token"]))


async def peek_link(request: Request) -> Response:
    """Never redeems: answers with what a GET would say about the link's state."""
    result = await _state(request).redeemer.inspect(request.path_params["token"])
    if result.outcome is Outcome.SUCCESS:
        headers = page_headers(secrets.token_urlsafe(16))
        return Response(status_code=200, media_type="text/html", headers=headers)
    return answer(result)


# HEAD first: a GET route answers HEAD too, and the first full match wins.
router.add_route("/r/{token:path}", peek_link, methods=["HEAD"])
router.add_route("/r/{token:path}", redeem_link, methods=["GET", "POST"])
