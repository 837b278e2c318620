"""``/r/{token}``: where people arrive. Answers with a redirect or a page, never JSON.

GET shows a confirmation page or redeems, POST redeems (with the page's nonce
when the action asks for confirmation, or with the RFC 8058 one-click body for
a ``one_click`` action), HEAD answers as GET would, without a body and without
redeeming anything (``service.confirm``). A token that fails verification
counts towards its address's limit (``service.rate_limits``); over it, the
answer is the 429 page instead of the 400 page.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope

from service import metrics, request_context
from service.api.openapi import one_click_response, operation, page_responses
from service.api.problems import unavailable_page
from service.api.routes import SERVING_APP
from service.confirm import Confirmation, Gate
from service.errors import DatabaseUnavailable
from service.mint import ONE_CLICK_BODY
from service.pages import (
    LINK_HEADERS,
    confirm_page,
    error_page,
    one_click_done,
    page_headers,
    rate_limited_page,
)
from service.pages.headers import language_headers
from service.pages.language import language_of
from service.rate_limits import Limited
from service.redeem import Outcome, Redemption
from service.state import AppState
from service.tokens import LinkClaims

router = APIRouter(tags=["link"], dependency_overrides_provider=SERVING_APP)

LINK_PATH = "/r/{token:path}"


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """What the access log reads off ``scope["route"]`` (``service.api.access``)."""

    path: str


LINK_ROUTE = RouteTemplate(LINK_PATH)  # for GETs answered by ``link_fast_path``

# Pages shown when a failure has no failure URL to go to.
FALLBACK_PAGE = {
    Outcome.EXPIRED: "expired",
    Outcome.USED: "used",
    Outcome.REVOKED: "revoked",
    Outcome.DISABLED: "disabled",
    Outcome.REJECTED: "rejected",
    Outcome.UNAVAILABLE: "unavailable",
}
FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 4096  # the confirmation form sends one short field
ONE_CLICK_FIELDS = parse_qs(ONE_CLICK_BODY)


@dataclass(frozen=True, slots=True)
class PostedForm:
    """What a POST to a link said: the confirmation form's nonce, or RFC 8058's one click."""

    nonce: str | None = None
    one_click: bool = False


def state_of(scope: Scope) -> AppState:
    """The process's state, read off the app instead of through a dependency: every
    link request pays for dependency resolution, and this one needs none.
    """
    state: AppState = scope["app"].state.services
    return state


def gate_of(request: Request) -> Gate:
    return state_of(request.scope).gate


def answer_one_click(result: Redemption, scope: Scope) -> Response:
    """RFC 8058 answers a machine: 200 text when the link is used up (now or before),
    else the page of what went wrong, with its status; never a redirect."""
    if result.outcome in (Outcome.SUCCESS, Outcome.USED):
        return one_click_done(scope)
    if result.outcome is Outcome.INVALID:
        return error_page(scope, "invalid")
    headers = {"Retry-After": "5"} if result.outcome is Outcome.UNAVAILABLE else None
    return error_page(scope, FALLBACK_PAGE[result.outcome], headers)


# starlette's RedirectResponse, whose headers it builds through its header machinery
# on every request: the same status, headers (in the same order) and empty body.
REDIRECT_HEADERS = [
    *(
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in LINK_HEADERS.items()
    ),
    (b"content-length", b"0"),
]
LOCATION_SAFE = ":/%#?=@[]!$&'()*+,;"  # RedirectResponse's ``quote`` of the location
# What that ``quote`` leaves as it is (its safe characters and the always-safe ones).
UNQUOTED = re.compile(r"[A-Za-z0-9_.~:/%#?=@\[\]!$&'()*+,;-]*")


class LinkRedirect(Response):
    """``RedirectResponse(url, 303, LINK_HEADERS)``, built directly: every redemption
    answers one (``tests/test_redirects.py`` holds them equal)."""

    def __init__(self, url: str) -> None:
        self.status_code = 303
        self.body = b""
        self.background = None
        if UNQUOTED.fullmatch(url) is None:
            url = quote(url, safe=LOCATION_SAFE)
        location = url.encode("latin-1")
        self.raw_headers = [*REDIRECT_HEADERS, (b"location", location)]


def answer(result: Redemption | Confirmation, scope: Scope) -> Response:
    """A redirect, or a page in the language of the request in ``scope``."""
    if isinstance(result, Confirmation):
        return confirm_page(scope, result)
    if result.outcome is Outcome.INVALID:
        return error_page(scope, "invalid")
    target = result.target_url()
    if target is not None:
        return LinkRedirect(target)
    if result.outcome is Outcome.SUCCESS:
        return error_page(scope, "disabled")  # success with nowhere allowed to go
    headers = {"Retry-After": "5"} if result.outcome is Outcome.UNAVAILABLE else None
    return error_page(scope, FALLBACK_PAGE[result.outcome], headers)


async def refused_forgery(result: Redemption | Confirmation, scope: Scope) -> Response | None:
    """The 429 page for a token that failed verification, from an address over its limit
    (the failure is counted here); None for anything else."""
    if isinstance(result, Redemption) and result.outcome is Outcome.INVALID:
        wait = await state_of(scope).limits.failures.failed(scope, Limited.LINK)
        if wait is not None:
            return rate_limited_page(scope, wait)
    return None


async def respond(result: Redemption | Confirmation, scope: Scope) -> Response:
    """``answer``, or the 429 page for a forged token from an address over its limit."""
    refused = await refused_forgery(result, scope)
    return refused if refused is not None else answer(result, scope)


async def posted_form(request: Request) -> PostedForm:
    """The confirmation form's ``confirm`` field, or the one-click body; nothing for any other."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != FORM:
        return PostedForm()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return PostedForm()
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=4)
    except ValueError:  # not ASCII, or too many fields
        return PostedForm()
    if fields == ONE_CLICK_FIELDS:
        return PostedForm(one_click=True)
    values = fields.get("confirm", [])
    return PostedForm(nonce=values[0] if len(values) == 1 else None)


def without_body(response: Response) -> Response:
    """The answer to a HEAD: the GET's status and headers, no body."""
    bare = Response(status_code=response.status_code)
    bare.raw_headers = list(response.raw_headers)
    return bare


def observe(result: Redemption | Confirmation) -> None:
    """Note the outcome for the access log and count an untrusted token (never the token)."""
    link: LinkClaims | None = result.link
    if isinstance(result, Confirmation):
        outcome = "confirm"
    else:
        outcome = result.outcome.value
        if result.outcome is Outcome.INVALID:
            metrics.auth_failed("link_token")
    request_context.annotate(
        client_id=link.client_id if link else None,
        link_id=link.link_id if link else None,
        outcome=outcome,
    )


def counted(result: Redemption | Confirmation) -> Redemption | Confirmation:
    """A GET or POST answer: observed, and counted unless it only shows the confirm page."""
    observe(result)
    if isinstance(result, Redemption):
        metrics.redemption(result.outcome.value)
    return result


async def open_answer(gate: Gate, token: str, scope: Scope) -> Response:
    """The answer to a GET, the 503 page included: the route's and the fast path's."""
    try:
        result = await gate.open(token)
    except DatabaseUnavailable as exc:
        return unavailable_page(scope, exc)
    return await respond(counted(result), scope)


@router.get(
    LINK_PATH,
    response_class=Response,
    **operation(
        "followLink",
        "Follow a link (people)",
        status=303,
        responses=page_responses(303, 200, 400, 404, 409, 410, 429, 503),
    ),
)
async def open_link(token: str, request: Request) -> Response:
    """Redeems the link and redirects to the success URL (with `link_id`,
    `redemption_id`), or to the failure URL with `error=expired|used|revoked|
    disabled|rejected|unavailable`. A `confirm: "page"` or `"auto"` action shows a
    confirmation page instead and redeems nothing. A token that does not verify
    is a 400 page, never a redirect; a 429 page once its client address has sent
    more such tokens than `RATE_LIMIT_LINK_FAILURES` allows.
    \f
    Answered by ``service.api.link_fast_path`` in the app; here for the OpenAPI
    document and for an app mounted under a root path. Takes nothing the fast path
    does not give it (``tests/test_link_fast_path.py`` checks).
    """
    return await open_answer(gate_of(request), token, request.scope)


@router.post(
    LINK_PATH,
    response_class=Response,
    **operation(
        "confirmLink",
        "Redeem a link from its confirmation page, or by one-click unsubscribe",
        status=303,
        responses={
            **page_responses(303, 400, 403, 404, 409, 410, 429, 503),
            **one_click_response(),
        },
    ),
)
async def submit_link(token: str, request: Request) -> Response:
    """Redeems like following the link. For a `confirm` action only with the
    confirmation page's form (its `confirm` nonce); without one, 403 and the page
    again, nothing done.

    For a `one_click` action, the body `List-Unsubscribe=One-Click`
    (`application/x-www-form-urlencoded`, RFC 8058, as mail providers send it)
    redeems whatever the `confirm` mode and answers `200` with a short plain
    text, also when the link was used already; an expired, revoked or disabled
    link answers its page (`410`), a bad token `400`. Never a redirect.
    """
    gate = gate_of(request)
    form = await posted_form(request)
    if form.one_click:
        clicked = await gate.one_click(token)
        if clicked is not None:
            counted(clicked)
            refused = await refused_forgery(clicked, request.scope)
            return refused if refused is not None else answer_one_click(clicked, request.scope)
    result = await gate.submit(token, form.nonce)
    return await respond(counted(result), request.scope)


@router.head(
    LINK_PATH,
    response_class=Response,
    **operation(
        "peekLink",
        "What following a link would answer, without using it",
        responses=page_responses(200, 303, 400, 404, 410, 429, 503, body=False),
    ),
)
async def peek_link(token: str, request: Request) -> Response:
    """Never redeems or records anything: the status and headers a GET would
    answer about the link's state, without a body (mail scanners send these).
    """
    result = await gate_of(request).peek(token)
    observe(result)
    if isinstance(result, Redemption) and result.outcome is Outcome.SUCCESS:
        headers = page_headers(secrets.token_urlsafe(16))
        headers.update(language_headers(language_of(request.scope["headers"])))
        return Response(status_code=200, media_type="text/html", headers=headers)
    return without_body(await respond(result, request.scope))
