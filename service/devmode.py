"""``serve --dev``: a working service on a fresh machine, with nothing to configure.

Uses the embedded SQLite default, generates secrets once and keeps them in
``.action-links-dev.json`` (so links survive restarts), migrates, and makes
sure a demo client with an action and an API key exists. Logs are readable
lines (``LOG_FORMAT=console``) when stderr is a terminal, unless LOG_FORMAT
says otherwise. Never for production.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

from sqlalchemy import select

from service import admin
from service.config import Settings, load_settings
from service.db import migrate, one_off_session
from service.models import ApiKey, Client
from service.preflight import database_errors
from service.registry import hash_api_key
from service.schemas import ActionPut, ClientCreate

DEV_STATE_FILE = Path(".action-links-dev.json")
DEMO_CLIENT = "demo"
DEMO_ACTION = "welcome"


def _load_or_create_state() -> dict[str, str]:
    if DEV_STATE_FILE.exists():
        state: dict[str, str] = json.loads(DEV_STATE_FILE.read_text())
        return state
    state = {"secret_key": secrets.token_urlsafe(48), "admin_token": secrets.token_urlsafe(32)}
    DEV_STATE_FILE.write_text(json.dumps(state, indent=2))
    DEV_STATE_FILE.chmod(0o600)
    return state


def prepare_dev_environment() -> Settings:
    """Export the dev settings (workers inherit them), migrate, seed, print the demo."""
    state = _load_or_create_state()
    os.environ.setdefault("SECRET_KEYS", state["secret_key"])
    os.environ.setdefault("ADMIN_TOKEN", state["admin_token"])
    if sys.stderr.isatty():
        os.environ.setdefault("LOG_FORMAT", "console")
    os.environ["ACTION_LINKS_DEV"] = "1"
    settings = load_settings()
    with database_errors(settings.database_url):
        migrate(settings)
        api_key = asyncio.run(_seed_demo(settings, state.get("demo_api_key")))
    if api_key != state.get("demo_api_key"):
        state["demo_api_key"] = api_key
        DEV_STATE_FILE.write_text(json.dumps(state, indent=2))
    _print_banner(settings, api_key)
    return settings


async def _seed_demo(settings: Settings, known_key: str | None) -> str:
    base = settings.public_base_url
    async with one_off_session(settings) as session:
        if await session.get(Client, DEMO_CLIENT) is None:
            await admin.create_client(
                session,
                ClientCreate(id=DEMO_CLIENT, name="Demo shop", allowed_redirects=[f"{base}/demo/"]),
            )
            await admin.put_action(
                session,
                DEMO_CLIENT,
                DEMO_ACTION,
                ActionPut(success_url=f"{base}/demo/done", failure_url=f"{base}/demo/failed"),
            )
        key = known_key
        if (
            key is None
            or await session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_api_key(key)))
            is None
        ):
            key = (await admin.create_key(session, DEMO_CLIENT)).key
        await session.commit()
        return key


def _print_banner(settings: Settings, api_key: str) -> None:
    base = settings.public_base_url
    body = json.dumps({"action": DEMO_ACTION, "subject": "42"})
    print(
        "\n".join(
            [
                "",
                "Action Links — development mode (SQLite, generated secrets; not for production)",
                f"  demo client:  {DEMO_CLIENT}   action: {DEMO_ACTION}",
                f"  API key:      {api_key}",
                f"  admin token:  see {DEV_STATE_FILE}",
                "",
                f"  API docs:     {base}/docs",
                "",
                "Mint a link:",
                f"  curl -s -X POST {base}/v1/links -H 'Authorization: Bearer {api_key}' "
                f"-H 'Content-Type: application/json' -d '{body}'",
                'Then open the "url" it returns (or: curl -i <url>) to redeem it once.',
                "",
            ]
        ),
        file=sys.stderr,
        flush=True,
    )
