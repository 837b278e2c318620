"""``/docs``: Swagger UI from the service's own files, under its own CSP, with no internet.

Here without a browser: the page, its policy and its files. In Debian's Chromium,
rendering every operation and the webhook with nothing from another host:
``tests/test_browser.py::test_the_docs_render_every_operation_offline`` (the
module's Chromium, not one launched for this test alone; no screenshot: nothing
compared it, what the page shows is read from its DOM).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from service.api.docs import CSP

LOCAL_REFERENCE = re.compile(r'(?:src|href)="([^"]+)"')


async def test_the_page_and_its_files_are_served_by_the_service(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # no inline script: the CSP allows none
    references = LOCAL_REFERENCE.findall(page.text)
    assert set(references) == {
        "docs/favicon.png",
        "docs/swagger-ui.css",
        "docs/swagger-ui-bundle.js",
        "docs/init.js",
        "openapi.json",
    }
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for reference in references:
        assert not urlsplit(reference).netloc, reference  # nothing from another host
        if reference == "openapi.json":
            continue
        asset = await http.get(f"/{reference}")
        assert asset.status_code == 200, reference
        assert asset.headers["content-type"].startswith(kinds[Path(reference).suffix])
        assert len(asset.content) > 100
    missing = await http.get("/docs/redoc.standalone.js")  # in the package, not served
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
