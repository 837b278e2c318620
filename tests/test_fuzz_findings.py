"""What the schemathesis fuzzing (``tests/test_fuzz_api.py``) found, kept as plain tests.

Each was a 500 or an answer the OpenAPI document did not describe; each test
here failed before its fix.

On PostgreSQL only: each finding was in request handling, not in storage. Storage is
tested on both databases by ``tests/test_store.py`` and the suites marked ``backends``.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SHOP_ORIGIN, Tenant

Headers = dict[str, str]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/admin/clients", {"id": "nul", "name": "a\x00b"}),
        ("PATCH", "/v1/admin/clients/shop", {"name": "a\x00b"}),
        (
            "PUT",
            "/v1/admin/clients/shop/actions/go",
            {"success_url": f"{SHOP_ORIGIN}/ok", "label": "a\x00b"},
        ),
    ],
)
async def test_nul_in_names_and_labels_is_422(
    http: httpx.AsyncClient,
    admin_headers: Headers,
    shop: Tenant,
    method: str,
    path: str,
    body: dict[str, str],
) -> None:
    """PostgreSQL text cannot hold U+0000: it used to fail on INSERT (500)."""
    response = await http.request(method, path, json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
