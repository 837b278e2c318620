"""The baseline: the recipe a team would write instead of using Action Links.

FastAPI, one asyncpg pool, itsdangerous, and one
``INSERT … ON CONFLICT DO NOTHING RETURNING`` per redemption, then a 303.
It is written the way a careful team writes it (pydantic request models, a
pool, a bearer-token check), with no extra features: no revocations, no
per-client configuration, no audit beyond the one row, no redirect
allowlist, no once keys, no use counts above one.

Fairness: it signs with the same key, digest and key derivation as the
service (``URLSafeSerializer``, HMAC-SHA256, HMAC-derived key), runs under
uvicorn with the service's main settings (no access log, the same loop and
httptools parser, no proxy headers, the same worker count) and keeps as many
PostgreSQL connections per worker as the service (``DATABASE_POOL_SIZE``).
It does not copy what ``action-links serve`` adds on top (service/cli.py):
``BoundedHttpToolsProtocol`` (service/http_limits.py: limits on the request
head's size, header count and arrival time, a feature of the service that
costs ~6 % of a mint's CPU, bench/README.md), ``ws="none"``,
``server_header=False`` and the service's JSON ``log_config``. It stays an
independent app, written the way a team would write it.

Run it as ``python -m bench.baseline --port P --workers W`` with
``DATABASE_URL``, ``SECRET_KEYS``, ``BASELINE_API_TOKEN`` and
``DATABASE_POOL_SIZE`` in the environment; ``bench.run`` does that.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import httpx
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from itsdangerous import BadData, URLSafeSerializer
from pydantic import BaseModel
from starlette.responses import PlainTextResponse, RedirectResponse, Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS baseline_redemptions (
    link_id     text PRIMARY KEY,
    action      text NOT NULL,
    subject     text,
    redeemed_at timestamptz NOT NULL DEFAULT now()
)
"""

REDEEM = """
INSERT INTO baseline_redemptions (link_id, action, subject) VALUES ($1, $2, $3)
ON CONFLICT (link_id) DO NOTHING
RETURNING link_id
"""

INSPECT = "SELECT redeemed_at FROM baseline_redemptions WHERE link_id = $1"

SUCCESS_URL = "https://shop.example/welcome"
FAILURE_URL = "https://shop.example/oops"
DEFAULT_TTL = 86_400


class MintRequest(BaseModel):
    action: str
    subject: str | None = None
    data: Any = None
    expires_in: int | None = None


class LinkOut(BaseModel):
    id: str
    url: str
    token: str
    action: str
    subject: str | None
    expires_at: datetime


class BatchRequest(BaseModel):
    links: list[MintRequest]


class BatchOut(BaseModel):
    links: list[LinkOut]


class InspectRequest(BaseModel):
    token: str


def create_app() -> FastAPI:
    secret_key = os.environ["SECRET_KEYS"].split(",")[-1].strip()
    api_token = os.environ["BASELINE_API_TOKEN"]
    database_url = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    pool_size = int(os.environ.get("DATABASE_POOL_SIZE", "10"))
    public_base_url = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000")
    webhook_url = os.environ.get("WEBHOOK_URL")
    webhook_key = secrets.token_bytes(32)
    serializer = URLSafeSerializer(
        secret_key,
        salt="links",
        signer_kwargs={"digest_method": hashlib.sha256, "key_derivation": "hmac"},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            database_url, min_size=pool_size, max_size=pool_size
        )
        app.state.http = httpx.AsyncClient(timeout=5)
        try:
            yield
        finally:
            await app.state.http.aclose()
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None)

    async def require_token(authorization: Annotated[str, Header()] = "") -> None:
        if not hmac.compare_digest(authorization.encode(), f"Bearer {api_token}".encode()):
            raise HTTPException(401, "bad token")

    def mint(request: MintRequest) -> LinkOut:
        link_id = secrets.token_urlsafe(12)
        now_us = time.time_ns() // 1000
        expires = now_us // 1_000_000 + (request.expires_in or DEFAULT_TTL)
        payload = {"i": link_id, "c": "bench", "a": request.action, "t": now_us, "e": expires}
        if request.subject is not None:
            payload["s"] = request.subject
        if request.data is not None:
            payload["d"] = request.data
        token = serializer.dumps(payload)
        return LinkOut(
            id=link_id,
            url=f"{public_base_url}/r/{token}",
            token=token,
            action=request.action,
            subject=request.subject,
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    def verify(token: str) -> dict[str, Any] | None:
        try:
            payload: dict[str, Any] = serializer.loads(token)
        except BadData:
            return None
        return payload

    async def claim(request: Request, payload: dict[str, Any]) -> bool:
        row = await request.app.state.pool.fetchval(
            REDEEM, payload["i"], payload["a"], payload.get("s")
        )
        return row is not None

    @app.post("/links", status_code=201, dependencies=[Depends(require_token)])
    async def mint_one(request: MintRequest) -> LinkOut:
        return mint(request)

    @app.post("/links/batch", status_code=201, dependencies=[Depends(require_token)])
    async def mint_many(request: BatchRequest) -> BatchOut:
        return BatchOut(links=[mint(item) for item in request.links])

    @app.get("/r/{token}")
    async def redeem(token: str, request: Request) -> Response:
        payload = verify(token)
        if payload is None:
            return PlainTextResponse("invalid link", status_code=400)
        if payload["e"] < time.time():
            return RedirectResponse(f"{FAILURE_URL}?error=expired", status_code=303)
        if not await claim(request, payload):
            return RedirectResponse(f"{FAILURE_URL}?error=used", status_code=303)
        return RedirectResponse(f"{SUCCESS_URL}?link_id={payload['i']}", status_code=303)

    @app.get("/w/{token}")
    async def redeem_with_webhook(token: str, request: Request) -> Response:
        """The same, then the team's own webhook call inline (a signed POST)."""
        payload = verify(token)
        if payload is None:
            return PlainTextResponse("invalid link", status_code=400)
        if not await claim(request, payload):
            return RedirectResponse(f"{FAILURE_URL}?error=used", status_code=303)
        if webhook_url is not None:
            body = json.dumps({"type": "link.redeemed", "data": payload}).encode()
            signature = hmac.new(webhook_key, body, hashlib.sha256).digest()
            headers = {"webhook-signature": "v1," + base64.b64encode(signature).decode()}
            try:
                await request.app.state.http.post(webhook_url, content=body, headers=headers)
            except httpx.HTTPError:
                pass  # a real team would queue a retry here
        return RedirectResponse(f"{SUCCESS_URL}?link_id={payload['i']}", status_code=303)

    @app.post("/inspect", dependencies=[Depends(require_token)])
    async def inspect(body: InspectRequest, request: Request) -> dict[str, Any]:
        payload = verify(body.token)
        if payload is None:
            return {"valid": False, "reason": "invalid"}
        used = await request.app.state.pool.fetchval(INSPECT, payload["i"])
        return {"valid": used is None, "reason": None if used is None else "used"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="the hand-written baseline app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # Like `action-links serve` (service/cli.py) except for what is the service's
    # own: uvicorn's plain httptools protocol, not BoundedHttpToolsProtocol (a
    # feature, ~6 % of a mint's CPU); ws left at "auto"; the Server header sent;
    # uvicorn's default log config. See the module docstring.
    uvicorn.run(
        "bench.baseline:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level=os.environ.get("LOG_LEVEL", "info"),
        proxy_headers=False,
        timeout_graceful_shutdown=8,
    )


if __name__ == "__main__":
    main()
