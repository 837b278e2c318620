"""Dependencies, declared once as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from service import metrics, request_context
from service.errors import NotFound, Unauthorized
from service.registry import ClientConfig
from service.state import AppState


async def get_state(request: Request) -> AppState:
    """Async, so FastAPI calls it inline instead of hopping to its thread pool per request."""
    state: AppState = request.app.state.services
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One session per request; routers commit explicitly before answering."""
    async with state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticated_client(request: Request) -> ClientConfig:
    # The state is fetched directly, not as a sub-dependency: each dependency
    # FastAPI resolves costs CPU on every minting request (bench/README.md).
    presented = _bearer(request)
    if presented is None:
        metrics.auth_failed("api_key")
        raise Unauthorized("an API key is required: Authorization: Bearer alk_…")
    client = await (await get_state(request)).registry.authenticate(presented)
    if client is None:
        metrics.auth_failed("api_key")
        raise Unauthorized("the API key is not valid")
    request_context.annotate(client_id=client.id)
    return client


ClientDep = Annotated[ClientConfig, Depends(authenticated_client)]


async def require_admin(request: Request, state: StateDep) -> None:
    """With no ADMIN_TOKEN configured the admin API does not exist (404)."""
    token = state.settings.admin_token
    if token is None:
        raise NotFound("the admin API is not enabled")
    presented = _bearer(request)
    expected = token.get_secret_value().encode()
    if presented is None or not hmac.compare_digest(presented.encode(), expected):
        metrics.auth_failed("admin_token")
        raise Unauthorized("the admin token is not valid")


AdminDep = Depends(require_admin)
