"""Dependencies, declared once as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
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


# The two bearer credentials, named so that the OpenAPI document's security
# schemes say which routes take which (API.md, "Authentication"). They only
# read the header (``auto_error=False``): refusing is ours, as a problem+json 401.
_api_key = HTTPBearer(
    scheme_name="ApiKey",
    description="A client's API key (`alk_…`): `/v1/links…`, `/v1/revocations`, `/v1/redemptions…`",
    auto_error=False,
)
_admin_token = HTTPBearer(
    scheme_name="AdminToken",
    description="The configured `ADMIN_TOKEN`: `/v1/admin/…`",
    auto_error=False,
)
ApiKeyCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(_api_key)]
AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(_admin_token)]


async def authenticated_client(state: StateDep, credentials: ApiKeyCredentials) -> ClientConfig:
    presented = credentials.credentials if credentials else None
    if presented is None:
        metrics.auth_failed("api_key")
        raise Unauthorized("an API key is required: Authorization: Bearer alk_…")
    client = await state.registry.authenticate(presented)
    if client is None:
        metrics.auth_failed("api_key")
        raise Unauthorized("the API key is not valid")
    request_context.annotate(client_id=client.id)
    return client


ClientDep = Annotated[ClientConfig, Depends(authenticated_client)]


async def require_admin(state: StateDep, credentials: AdminCredentials) -> None:
    """With no ADMIN_TOKEN configured the admin API does not exist (404)."""
    token = state.settings.admin_token
    if token is None:
        raise NotFound("the admin API is not enabled")
    presented = credentials.credentials if credentials else None
    expected = token.get_secret_value().encode()
    if presented is None or not hmac.compare_digest(presented.encode(), expected):
        metrics.auth_failed("admin_token")
        raise Unauthorized("the admin token is not valid")


AdminDep = Depends(require_admin)
