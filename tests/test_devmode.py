"""``serve --dev`` on a fresh directory: SQLite, generated secrets, a demo link that redeems."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.support.processes import running_service

pytestmark = pytest.mark.slow


def test_dev_mode_starts_and_its_demo_link_redeems(tmp_path: Path) -> None:
    with running_service({}, tmp_path, "--dev", cwd=tmp_path) as service:
        banner = service.log()
        key = re.search(r"API key:\s+(alk_\S+)", banner)
        assert key, banner
        curl = re.search(r"curl -s -X POST (\S+) -H 'Authorization: Bearer (\S+)'", banner)
        assert curl, banner
        minted = httpx.post(
            curl.group(1),
            json={"action": "welcome", "subject": "42"},
            headers={"Authorization": f"Bearer {curl.group(2)}"},
        )
        assert minted.status_code == 201, minted.text
        url = minted.json()["url"]
        assert url.startswith(service.base_url)
        redeemed = httpx.get(url)
        assert redeemed.status_code == 303
        assert "redemption_id=" in redeemed.headers["location"]
        landing = httpx.get(redeemed.headers["location"])
        assert landing.status_code == 200
        assert "Link redeemed" in landing.text
        again = httpx.get(url)
        assert "error=used" in again.headers["location"]
    assert (tmp_path / "action-links.db").exists()
    state = json.loads((tmp_path / ".action-links-dev.json").read_text())
    assert state["demo_api_key"] == key.group(1)
