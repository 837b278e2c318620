"""``/docs``: Swagger UI from the service's own files, under its own CSP, with no internet.

The browser test runs Debian's Chromium (as ``tests/test_browser.py`` does)
against a real ``action-links serve`` process, with every request to
anything but that process aborted: the page must render every operation and
the webhook from what the service itself serves.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Route, async_playwright

from service.api.docs import CSP
from tests.conftest import SECRET
from tests.support.processes import ServiceProcess, running_service
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, Tab, require_chromium, screenshot

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


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    require_chromium()
    env = {"DATABASE_URL": database_url, "SECRET_KEYS": SECRET, "DATABASE_POOL_SIZE": "2"}
    with running_service(env, tmp_path) as process:
        yield process


@pytest.fixture
async def browser(service: ServiceProcess) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, chromium_sandbox=False
        )
        yield chromium
        await chromium.close()


@pytest.mark.slow
async def test_the_docs_render_every_operation_offline(
    browser: Browser, service: ServiceProcess, tmp_path: Path
) -> None:
    async with httpx.AsyncClient() as http:
        operations = (await http.get(f"{service.base_url}/openapi.json")).json()["paths"]
    ids = [op["operationId"] for methods in operations.values() for op in methods.values()]
    tab = await Tab.open(browser, DESKTOP)
    elsewhere: list[str] = []

    async def offline(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort("internetdisconnected")

    await tab.context.route("**/*", offline)
    response = await tab.page.goto(f"{service.base_url}/docs")
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
    await screenshot(page, tmp_path / "docs.png")

    assert elsewhere == []
    assert tab.csp_violations() == []
    assert not [line for line in tab.console if "Failed to load" in line], tab.console
    await tab.close()
