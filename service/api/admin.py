"""``/v1/admin``: operators manage clients, keys and actions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from service import admin, metrics
from service.api import examples
from service.api.deps import AdminDep, SessionDep, StateDep
from service.api.json_body import JsonRoute
from service.api.openapi import ADMIN_API, JSON_BODY, operation
from service.api.routes import SERVING_APP
from service.errors import Conflict
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

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    route_class=JsonRoute,
    dependency_overrides_provider=SERVING_APP,
)
# A body that does not validate; also an allowlist or webhook rule broken (validation_error).
WITH_BODY = (*ADMIN_API, *JSON_BODY)

ActionName = Annotated[str, Path(pattern=ACTION_NAME_PATTERN)]


@router.post(
    "/clients",
    **operation(
        "createClient",
        "Create a client",
        status=201,
        problems=(*WITH_BODY, Conflict),
        request_example=examples.CLIENT_CREATE,
        response_example=examples.CLIENT_CREATED,
    ),
)
async def create_client(
    request: ClientCreate, session: SessionDep, state: StateDep
) -> ClientCreated:
    """A calling backend (a tenant), with its webhook secret (`whsec_…`), shown
    here and by a rotation only. An id that exists answers 409.
    """
    client = await admin.create_client(session, request)
    await session.commit()
    state.registry.forget(client.id)
    return client


@router.get(
    "/clients",
    **operation(
        "listClients", "List clients", problems=ADMIN_API, response_example=[examples.CLIENT]
    ),
)
async def list_clients(session: SessionDep) -> list[ClientOut]:
    """Every client, without secrets."""
    return await admin.list_clients(session)


@router.get(
    "/clients/{client_id}",
    **operation("getClient", "One client", problems=ADMIN_API, response_example=examples.CLIENT),
)
async def get_client(client_id: str, session: SessionDep) -> ClientOut:
    """One client, without secrets."""
    return await admin.get_client(session, client_id)


@router.patch(
    "/clients/{client_id}",
    **operation(
        "updateClient",
        "Change a client",
        problems=WITH_BODY,
        request_example=examples.CLIENT_UPDATE,
        response_example=examples.CLIENT,
    ),
)
async def update_client(
    client_id: str, request: ClientUpdate, session: SessionDep, state: StateDep
) -> ClientOut:
    """Any of `name`, `webhook_url`, `allowed_redirects`, `enabled`. A disabled
    client's keys and links stop working (its links redeem to `error=disabled`).
    """
    client = await admin.update_client(session, client_id, request)
    await session.commit()
    state.registry.forget(client_id)
    return client


@router.delete(
    "/clients/{client_id}",
    **operation("deleteClient", "Delete a client", status=204, problems=ADMIN_API),
)
async def delete_client(client_id: str, session: SessionDep, state: StateDep) -> Response:
    """The client, its keys and its actions; its links redeem to `error=disabled`."""
    await admin.delete_client(session, client_id)
    await session.commit()
    state.registry.forget(client_id)
    return Response(status_code=204)


@router.post(
    "/clients/{client_id}/webhook-secret",
    **operation(
        "rotateWebhookSecret",
        "Replace a client's webhook secret",
        problems=ADMIN_API,
        response_example=examples.WEBHOOK_SECRET,
    ),
)
async def rotate_webhook_secret(
    client_id: str, session: SessionDep, state: StateDep
) -> WebhookSecretOut:
    """A new `whsec_…` secret; every process signs with it within `CACHE_TTL`
    seconds, so accept both secrets for that long.
    """
    rotated = await admin.rotate_webhook_secret(session, client_id)
    await session.commit()
    state.registry.forget(client_id)
    return rotated


@router.post(
    "/clients/{client_id}/keys",
    **operation(
        "createApiKey",
        "Create an API key",
        status=201,
        problems=ADMIN_API,
        response_example=examples.KEY_CREATED,
    ),
)
async def create_key(client_id: str, session: SessionDep) -> KeyCreated:
    """A new API key (`alk_…`), shown only in this answer; only its hash is stored."""
    key = await admin.create_key(session, client_id)
    await session.commit()
    return key


@router.get(
    "/clients/{client_id}/keys",
    **operation(
        "listApiKeys",
        "List a client's API keys",
        problems=ADMIN_API,
        response_example=[examples.KEY],
    ),
)
async def list_keys(client_id: str, session: SessionDep) -> list[KeyOut]:
    """Ids and prefixes, never the keys."""
    return await admin.list_keys(session, client_id)


@router.delete(
    "/clients/{client_id}/keys/{key_id}",
    **operation("deleteApiKey", "Delete an API key", status=204, problems=ADMIN_API),
)
async def delete_key(client_id: str, key_id: str, session: SessionDep, state: StateDep) -> Response:
    """The key stops working on every service process within `CACHE_TTL` seconds."""
    await admin.delete_key(session, client_id, key_id)
    await session.commit()
    state.registry.forget(client_id)
    return Response(status_code=204)


@router.put(
    "/clients/{client_id}/actions/{name}",
    **operation(
        "putAction",
        "Create or replace an action",
        problems=WITH_BODY,
        request_example=examples.ACTION_PUT,
        response_example=examples.ACTION,
    ),
)
async def put_action(
    client_id: str, name: ActionName, request: ActionPut, session: SessionDep, state: StateDep
) -> ActionOut:
    """A named kind of link: its redirect URLs (within the client's
    `allowed_redirects`), lifetime, use limit, confirmation and delivery mode.
    Fields left out take their defaults.
    """
    action = await admin.put_action(session, client_id, name, request)
    await session.commit()
    state.registry.forget(client_id)
    metrics.actions_known([(client_id, name)])  # its mints count from 0 in the next scrape
    return action


@router.get(
    "/clients/{client_id}/actions",
    **operation(
        "listActions",
        "List a client's actions",
        problems=ADMIN_API,
        response_example=[examples.ACTION],
    ),
)
async def list_actions(client_id: str, session: SessionDep) -> list[ActionOut]:
    """Every action of the client."""
    return await admin.list_actions(session, client_id)


@router.get(
    "/clients/{client_id}/actions/{name}",
    **operation("getAction", "One action", problems=ADMIN_API, response_example=examples.ACTION),
)
async def get_action(client_id: str, name: str, session: SessionDep) -> ActionOut:
    """One action of the client."""
    return await admin.get_action(session, client_id, name)


@router.delete(
    "/clients/{client_id}/actions/{name}",
    **operation("deleteAction", "Delete an action", status=204, problems=ADMIN_API),
)
async def delete_action(
    client_id: str, name: str, session: SessionDep, state: StateDep
) -> Response:
    """Links of a deleted action redeem to `error=disabled`."""
    await admin.delete_action(session, client_id, name)
    await session.commit()
    state.registry.forget(client_id)
    return Response(status_code=204)
