"""``/v1/admin``: operators manage clients, keys and actions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from service import admin
from service.api.deps import AdminDep, SessionDep, StateDep
from service.api.json_body import JsonRoute
from service.api.openapi import problem_responses
from service.models import Action, Client
from service.schemas import (
    ACTION_NAME_PATTERN,
    ActionOut,
    ActionPut,
    ClientCreate,
    ClientCreated,
    ClientOut,
    ClientUpdate,
    KeyCreated,
    KeyOut,
    WebhookSecretOut,
)

# 404 on every route: also what the whole admin API answers without an ADMIN_TOKEN.
router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=problem_responses(401, 404, 503),
    route_class=JsonRoute,
)
WITH_BODY = problem_responses(400, 413, 422)

ActionName = Annotated[str, Path(pattern=ACTION_NAME_PATTERN)]


def _client_out(client: Client) -> ClientOut:
    return ClientOut.model_validate(client, from_attributes=True)


def _action_out(action: Action) -> ActionOut:
    return ActionOut.model_validate(action, from_attributes=True)


@router.post("/clients", status_code=201, responses=WITH_BODY | problem_responses(409))
async def create_client(
    request: ClientCreate, session: SessionDep, state: StateDep
) -> ClientCreated:
    client = await admin.create_client(session, request)
    await session.commit()
    state.registry.forget(client.id)
    return ClientCreated.model_validate(client, from_attributes=True)


@router.get("/clients")
async def list_clients(session: SessionDep) -> list[ClientOut]:
    return [_client_out(c) for c in await admin.list_clients(session)]


@router.get("/clients/{client_id}")
async def get_client(client_id: str, session: SessionDep) -> ClientOut:
    return _client_out(await admin.get_client(session, client_id))


@router.patch("/clients/{client_id}", responses=WITH_BODY)
async def update_client(
    client_id: str, request: ClientUpdate, session: SessionDep, state: StateDep
) -> ClientOut:
    client = await admin.update_client(session, client_id, request)
    await session.commit()
    state.registry.forget(client_id)
    return _client_out(client)


@router.delete("/clients/{client_id}", status_code=204)
async def delete_client(client_id: str, session: SessionDep, state: StateDep) -> Response:
    await admin.delete_client(session, client_id)
    await session.commit()
    state.registry.forget(client_id)
    return Response(status_code=204)


@router.post("/clients/{client_id}/webhook-secret")
async def rotate_webhook_secret(
    client_id: str, session: SessionDep, state: StateDep
) -> WebhookSecretOut:
    client = await admin.rotate_webhook_secret(session, client_id)
    await session.commit()
    state.registry.forget(client_id)
    return WebhookSecretOut(webhook_secret=client.webhook_secret)


@router.post("/clients/{client_id}/keys", status_code=201)
async def create_key(client_id: str, session: SessionDep) -> KeyCreated:
    key, plain = await admin.create_key(session, client_id)
    await session.commit()
    return KeyCreated(id=key.id, key=plain, prefix=key.prefix, created_at=key.created_at)


@router.get("/clients/{client_id}/keys")
async def list_keys(client_id: str, session: SessionDep) -> list[KeyOut]:
    keys = await admin.list_keys(session, client_id)
    return [KeyOut.model_validate(k, from_attributes=True) for k in keys]


@router.delete("/clients/{client_id}/keys/{key_id}", status_code=204)
async def delete_key(client_id: str, key_id: str, session: SessionDep, state: StateDep) -> Response:
    await admin.delete_key(session, client_id, key_id)
    await session.commit()
    state.registry.forget(client_id)
    return Response(status_code=204)


@router.put("/clients/{client_id}/actions/{name}", responses=WITH_BODY)
async def put_action(
    client_id: str, name: ActionName, request: ActionPut, session: SessionDep, state: StateDep
) -> ActionOut:
    action = await admin.put_action(session, client_id, name, request)
    await session.commit()
    state.registry.forget(client_id)
    return _action_out(action)


@router.get("/clients/{client_id}/actions")
async def list_actions(client_id: str, session: SessionDep) -> list[ActionOut]:
    return [_action_out(a) for a in await admin.list_actions(session, client_id)]


@router.get("/clients/{client_id}/actions/{name}")
async def get_action(client_id: str, name: str, session: SessionDep) -> ActionOut:
    return _action_out(await admin.get_action(session, client_id, name))


@router.delete("/clients/{client_id}/actions/{name}", status_code=204)
async def delete_action(
    client_id: str, name: str, session: SessionDep, state: StateDep
) -> Response:
    await admin.delete_action(session, client_id, name)
    await session.commit()
    state.registry.forget(client_id)
    return Response(status_code=204)
