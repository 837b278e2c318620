"""Landing pages for the ``serve --dev`` demo client. Mounted only in dev mode."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.routes import SERVING_APP
from service.pages import html_page

router = APIRouter(
    prefix="/demo",
    tags=["demo"],
    include_in_schema=False,
    dependency_overrides_provider=SERVING_APP,
)


def landing(request: Request, error: str | None, link_id: str, redemption_id: str) -> Response:
    """The demo client's page, in the visitor's language; ``error`` None on success."""
    context = {"kind": "demo", "error": error, "link_id": link_id, "redemption_id": redemption_id}
    return html_page(request.scope, "demo.html", 200, **context)


@router.get("/done")
async def done(request: Request, link_id: str = "", redemption_id: str = "") -> Response:
    return landing(request, None, link_id, redemption_id)


@router.get("/failed")
async def failed(request: Request, error: str = "", link_id: str = "") -> Response:
    return landing(request, error, link_id, "")
