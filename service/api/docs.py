"""``/docs``: Swagger UI on this service's OpenAPI document, from the service's own files.

Nothing comes from a CDN, so the page works with no internet access: Swagger
UI's release files ship in the ``fastapi-offline`` package (which tracks
Swagger UI's releases; only its files are used here), and the page and its
start-up script are ours (``docs_page/``). The start-up script is a file
rather than an inline script, so the page's Content-Security-Policy allows
scripts and styles from the service itself and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from starlette.responses import FileResponse

from service.api.routes import SERVING_APP
from service.errors import NotFound

router = APIRouter(include_in_schema=False, dependency_overrides_provider=SERVING_APP)

PAGE_DIR = Path(__file__).parent / "docs_page"
SWAGGER_UI = Path(fastapi_offline.__file__).parent / "static"

# Swagger UI's icons are data: URIs in its stylesheet; "Try it out" calls this origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
ASSET_HEADERS = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}

# name → (where it is, media type)
ASSETS: dict[str, tuple[Path, str]] = {
    "init.js": (PAGE_DIR / "init.js", "text/javascript"),
    "swagger-ui-bundle.js": (SWAGGER_UI / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (SWAGGER_UI / "swagger-ui.css", "text/css"),
    "favicon.png": (SWAGGER_UI / "favicon.png", "image/png"),
}


@router.get("/docs")
async def docs_page() -> FileResponse:
    return FileResponse(PAGE_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/docs/{name}")
async def docs_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise NotFound(f"no file '{name[:64]}' for the docs page")
    path, media_type = ASSETS[name]
    return FileResponse(path, media_type=media_type, headers=ASSET_HEADERS)
