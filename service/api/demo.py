"""Landing pages for the ``serve --dev`` demo client. Mounted only in dev mode."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from service.pages import html_page

router = APIRouter(prefix="/demo", tags=["demo"], include_in_schema=False)


@router.get("/done")
async def done(link_id: str = "", redemption_id: str = "") -> Response:
    return html_page(
        "demo.html", 200, title="Link redeemed", link_id=link_id, redemption_id=redemption_id
    )


@router.get("/failed")
async def failed(error: str = "", link_id: str = "") -> Response:
    return html_page("demo.html", 200, title=f"Link refused: {error}", link_id=link_id)
