"""Landing pages for the ``serve --dev`` demo client. Mounted only in dev mode."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.pages import html_page

router = APIRouter(prefix="/demo", tags=["demo"], include_in_schema=False)


@router.get("/done")
async def done(request: Request, link_id: str = "", redemption_id: str = "") -> Response:
    return html_page(
        request.scope,
        "demo.html",
        200,
        kind="demo",
        error=None,
        link_id=link_id,
        redemption_id=redemption_id,
    )


@router.get("/failed")
async def failed(request: Request, error: str = "", link_id: str = "") -> Response:
    return html_page(
        request.scope,
        "demo.html",
        200,
        kind="demo",
        error=error,
        link_id=link_id,
        redemption_id="",
    )
