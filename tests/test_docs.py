"""``/docs``: Swagger UI from the service's own files, under its own CSP, with no internet.

The browser test runs Debian's Chromium (as ``tests/test_browser.py`` does)
against the app, in-process: Playwright's request interception hands each
request for the service's origin to the app and Chromium the app's answer,
headers (its CSP) included, and aborts every request to anything else: the
page must render every operation and the webhook from what the service
itself serves. (No screenshot: nothing would compare it; what the page shows is read
from its DOM.)
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Route

from service.api.docs import CSP
from tests.test_browser import DESKTOP, Tab, launched

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


SERVICE_ORIGIN = "http://links.test"  # answered by the app, never by a network


@pytest.mark.slow
async def test_the_docs_render_every_operation_offline(http: httpx.AsyncClient) -> None:
    operations = (await http.get("/openapi.json")).json()["paths"]
    ids = [op["operationId"] for methods in operations.values() for op in methods.values()]
    async with launched() as browser:
        await docs_render(browser, http, ids)


async def docs_render(browser: Browser, http: httpx.AsyncClient, ids: list[str]) -> None:
    tab = await Tab.open(browser, DESKTOP)
    elsewhere: list[str] = []

    async def offline(route: Route) -> None:
        request = route.request
        if not request.url.startswith(f"{SERVICE_ORIGIN}/"):
            elsewhere.append(request.url)
            await route.abort("internetdisconnected")
            return
        answer = await http.request(
            request.method,
            request.url.removeprefix(SERVICE_ORIGIN),
            headers=await request.all_headers(),
            content=request.post_data_buffer,
        )
        await route.fulfill(
            status=answer.status_code, headers=dict(answer.headers), body=answer.content
        )

    await tab.context.route("**/*", offline)
    response = await tab.page.goto(f"{SERVICE_ORIGIN}/docs")
    assert response is not None
    assert response.status == 200
    page = tab.page
    await page.locator("#operations-links-mintLink").wait_for()
    await page.get_by_text("link.redeemed").first.wait_for()
    shown = await page.locator(".opblock-summary-operation-id").all_inner_texts()
    assert set(ids) <= set(shown)
    assert "Mint one link" in await page.inner_text("#operations-links-mintLink")

    # An operation opens on its example and its problem codes.
    await page.locator("#operations-links-mintLink .opblock-summary-control").click()
    details = page.locator("#operations-links-mintLink")
    await details.get_by_text("activate_user").first.wait_for()
    assert "unknown_action" in await details.inner_text()

    assert elsewhere == []
    assert tab.csp_violations() == []
    assert not [line for line in tab.console if "Failed to load" in line], tab.console
    await tab.close()
