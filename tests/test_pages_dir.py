"""``PAGES_DIR``: an operator's templates and style over the built-in pages.

What the operator may change is the body; the escaping and every header
(CSP with its nonce, the security headers, the language) stay the code's.
A template that fails to render answers with the built-in page and one
warning per template, never a 500. In a real browser: ``test_browser.py``.
The built-in app and the clients are the module's (``tests.support.shared_app``);
each test's operator app is its own, over its own ``PAGES_DIR``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from service.config import ConfigurationError, Settings
from tests.conftest import Tenant, link_path, make_tenant
from tests.support.served import serving
from tests.support.shared_app import FIXTURES, new_client_id, on_the_modules_loop
from tests.test_confirm import HOSTILE, assert_people_page

backend, database_url, settings, app, state, http, shop = FIXTURES  # the module's app

Headers = dict[str, str]
OPERATOR_PAGE = """{% extends "base.html" %}
{% block title %}{{ page.title }} · Example Corp{% endblock %}
{% block main %}
  <h1 class="operator">{{ page.title }}</h1>
  <p>{{ page.message }}</p>
  <p>{{ _("Ask the sender for a new link.") }}</p>
  <script>document.title = "from a script";</script>
{% endblock %}
"""
OPERATOR_CONFIRM = """{% extends "base.html" %}
{% block title %}{{ what }}{% endblock %}
{% block main %}
  <h1 class="operator">{{ what }} — {{ sender }}</h1>
  <form method="post"><input type="hidden" name="confirm" value="{{ confirm_nonce }}">
  <button type="submit">{{ _("Confirm") }}</button></form>
{% endblock %}
"""
OPERATOR_STYLE = "body { background: rebeccapurple; } /* operator */\n"
BROKEN = {
    "syntax error": '{% extends "base.html" %}{% block main %}{% if %}{% endblock %}',
    "undefined variable": '{% extends "base.html" %}{% block main %}{{ nope.x }}{% endblock %}',
    "exception": (
        '{% extends "base.html" %}{% block main %}'
        "{{ page.status // (page.status - page.status) }}{% endblock %}"
    ),
    "missing include": '{% extends "base.html" %}{% block main %}{% include "x" %}{% endblock %}',
}


@pytest.fixture
def pages_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pages"
    directory.mkdir()
    return directory


@pytest_asyncio.fixture(loop_scope="module")
async def operator_http(settings: Settings, pages_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings.model_copy(update={"pages_dir": pages_dir})) as client:
        yield client


def page_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "service.pages.render" and record.levelno == logging.WARNING
    ]


async def test_an_operator_template_and_style_replace_the_built_in_ones(
    pages_dir: Path, operator_http: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    (pages_dir / "page.html").write_text(OPERATOR_PAGE)
    (pages_dir / "style.css").write_text(OPERATOR_STYLE)
    built_in = await http.get("/r/garbage", headers={"Accept-Language": "de"})
    response = await operator_http.get("/r/garbage", headers={"Accept-Language": "de"})
    html = response.text
    assert response.status_code == 400
    assert '<h1 class="operator">Dieser Link ist ungültig</h1>' in html
    assert "<title>Dieser Link ist ungültig · Example Corp</title>" in html
    assert "Bitten Sie den Absender um einen neuen Link." in html
    assert OPERATOR_STYLE in html  # in the built-in base, inside the nonce'd <style>
    assert '<html lang="de">' in html
    # The headers are the code's: the operator's inline script stays blocked.
    for name in ("content-language", "vary", "cache-control", "x-content-type-options"):
        assert response.headers[name] == built_in.headers[name], name
    policy = response.headers["content-security-policy"]
    assert "script-src 'none'" in policy
    assert (
        policy.split("style-src")[0]
        == built_in.headers["content-security-policy"].split("style-src")[0]
    )


async def test_an_operator_confirm_page_escapes_what_it_shows(
    pages_dir: Path,
    operator_http: httpx.AsyncClient,
    admin_headers: Headers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (pages_dir / "confirm.html").write_text(OPERATOR_CONFIRM)
    tenant = await make_tenant(operator_http, admin_headers, new_client_id("evil"), name=HOSTILE)
    await tenant.put_action("activate", admin_headers, confirm="page", label=HOSTILE)
    link = await tenant.mint()
    response = await operator_http.get(link_path(link), headers={"Accept-Language": "es"})
    html = assert_people_page(response, 200)
    assert '<h1 class="operator">&lt;script&gt;' in html
    assert "<img" not in html
    assert ">Confirmar</button>" in html
    assert page_warnings(caplog) == []


@pytest.mark.parametrize("broken", sorted(BROKEN))
async def test_a_broken_template_falls_back_to_the_built_in_page_with_one_warning(
    broken: str,
    pages_dir: Path,
    operator_http: httpx.AsyncClient,
    shop: Tenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (pages_dir / "page.html").write_text(BROKEN[broken])
    (pages_dir / "style.css").write_text(OPERATOR_STYLE)
    token = (await shop.mint())["token"]
    caplog.set_level(logging.WARNING, logger="service.pages.render")
    for language in ("de", "fr", "en", "de", "es") * 4:
        response = await operator_http.get("/r/garbage", headers={"Accept-Language": language})
        html = assert_people_page(response, 400)
        assert "<h1>" in html  # the built-in page, whole: no 500
        assert OPERATOR_STYLE not in html  # (the operator's base might be what broke)
        assert (await operator_http.post("/r/garbage")).status_code == 400
    warnings = page_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "page.html" in warnings[0]
    assert token not in caplog.text
    assert "400" not in warnings[0]  # the exception's words, not the values it met


async def test_another_template_still_renders_from_pages_dir(
    pages_dir: Path,
    operator_http: httpx.AsyncClient,
    shop: Tenant,
    admin_headers: Headers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken page.html costs only that template: confirm.html is still the operator's."""
    (pages_dir / "page.html").write_text(BROKEN["syntax error"])
    (pages_dir / "confirm.html").write_text(OPERATOR_CONFIRM)
    await shop.put_action("activate", admin_headers, confirm="page")
    link = await shop.mint()
    assert (await operator_http.get("/r/garbage")).status_code == 400
    html = assert_people_page(await operator_http.get(link_path(link)), 200)
    assert '<h1 class="operator">' in html
    assert len(page_warnings(caplog)) == 1


@pytest.mark.parametrize("what", ["missing", "a file"])
def test_serving_refuses_a_pages_dir_that_is_not_a_directory(tmp_path: Path, what: str) -> None:
    path = tmp_path / "pages"
    if what == "a file":
        path.write_text("")
    settings = Settings(secret_keys="k" * 40 + "0123456789", pages_dir=path)
    with pytest.raises(ConfigurationError, match=f"^PAGES_DIR={path} is not a directory$"):
        settings.check_serveable()


def test_pages_dir_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PAGES_DIR", str(tmp_path))
    assert Settings().pages_dir == tmp_path
    monkeypatch.setenv("PAGES_DIR", "")
    assert Settings().pages_dir is None


on_the_modules_loop(globals())
