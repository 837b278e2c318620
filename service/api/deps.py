"""Dependencies, declared once as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from service import metrics, request_context
from service.api.bearer import matches_any
from service.errors import NotFound, RateLimited, Unauthorized
from service.metrics import Credential
from service.rate_limits import Limited
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
    description="One of the configured `ADMIN_TOKEN`s: `/v1/admin/…`",
    auto_error=False,
)
_metrics_token = HTTPBearer(
    scheme_name="MetricsToken",
    description="One of the configured `METRICS_TOKEN`s: `/metrics`, which is open without one",
    auto_error=False,
)
ApiKeyCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(_api_key)]
AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(_admin_token)]
MetricsCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(_metrics_token)]


def _too_many(wait: int | None) -> None:
    if wait is not None:
        raise RateLimited("too many failed authentications from this address", wait)


async def authenticated_client(
    request: Request, state: StateDep, credentials: ApiKeyCredentials
) -> ClientConfig:
    """The client owning the request's API key. An address over its limit of failed
    authentications (``service.rate_limits``) gets 429 before its key is looked at."""
    _too_many(state.limits.failures.refused(request.scope, Limited.AUTH))
    presented = credentials.credentials if credentials else None
    if presented is None:
        metrics.auth_failed("api_key")
        raise Unauthorized("an API key is required: Authorization: Bearer alk_…")
    client = await state.registry.authenticate(presented)
    if client is None:
        metrics.auth_failed("api_key")
        _too_many(await state.limits.failures.failed(request.scope, Limited.AUTH))
        raise Unauthorized("the API key is not valid")
    request_context.annotate(client_id=client.id)
    return client


ClientDep = Annotated[ClientConfig, Depends(authenticated_client)]


async def request_client(request: Request, state: AppState) -> ClientConfig:
    """What ``ClientDep`` gives for ``request``, or its refusal, without FastAPI solving
    it (``service.api.direct``)."""
    return await authenticated_client(request, state, await _api_key(request))


async def _require_operator_token(
    request: Request,
    state: AppState,
    credentials: HTTPAuthorizationCredentials | None,
    tokens: list[str],
    credential: Credential,
    refusal: str,
) -> None:
    """One of ``tokens``, or 401. A wrong token counts towards the address's limit of
    failed authentications, with wrong API keys; a missing one guesses nothing."""
    _too_many(state.limits.failures.refused(request.scope, Limited.AUTH))
    presented = credentials.credentials if credentials else None
    if matches_any(presented, tokens):
        return
    metrics.auth_failed(credential)
    if presented is not None:
        _too_many(await state.limits.failures.failed(request.scope, Limited.AUTH))
    raise Unauthorized(refusal)


async def require_admin(request: Request, state: StateDep, credentials: AdminCredentials) -> None:
    """With no ADMIN_TOKEN configured the admin API does not exist (404)."""
    tokens = state.settings.admin_tokens()
    if not tokens:
        raise NotFound("the admin API is not enabled")
    await _require_operator_token(
        request, state, credentials, tokens, "admin_token", "the admin token is not valid"
    )


AdminDep = Depends(require_admin)


async def require_metrics_token(
    request: Request, state: StateDep, credentials: MetricsCredentials
) -> None:
    """With no METRICS_TOKEN configured ``/metrics`` is open, as Prometheus expects."""
    tokens = state.settings.metrics_tokens()
    if tokens:
        await _require_operator_token(
            request,
            state,
            credentials,
            tokens,
            "metrics_token",
            "a metrics token is required: Authorization: Bearer <METRICS_TOKEN>",
        )


MetricsDep = Depends(require_metrics_token)
