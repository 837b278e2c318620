"""Admin use cases: clients, keys, actions. Shared by the admin API and the CLI.

Functions work in the caller's session and only flush; the caller commits.
Every write also announces the change in that transaction
(``service.store.changes``), so every service process forgets the client's
cached configuration as soon as the change commits.
They answer with the HTTP contract's objects (``service.schemas``), mapped
from the rows here and nowhere else, so the API and the CLI show the same.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import asdict
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import Conflict, NotFound, ValidationFailed
from service.models import Action, ApiKey, Client
from service.redirects import require_allowed
from service.registry import ActionConfig, hash_api_key, new_api_key
from service.schemas import (
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
from service.store.changes import announce
from service.webhooks import SECRET_PREFIX

WEBHOOK_SECRET_BYTES = 24


def new_webhook_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode()


def _now() -> datetime:
    return datetime.now(UTC)


def client_out(client: Client) -> ClientOut:
    return ClientOut.model_validate(client, from_attributes=True)


def action_out(action: Action) -> ActionOut:
    """An action's settings as the registry reads them (``ActionConfig.from_row``), with
    the fields only the admin sees."""
    return ActionOut(
        client_id=action.client_id,
        **asdict(ActionConfig.from_row(action)),
        created_at=action.created_at,
        updated_at=action.updated_at,
    )


async def _client(session: AsyncSession, client_id: str) -> Client:
    client = await session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client '{client_id}'")
    return client


async def get_client(session: AsyncSession, client_id: str) -> ClientOut:
    return client_out(await _client(session, client_id))


async def list_clients(session: AsyncSession) -> list[ClientOut]:
    clients = (await session.scalars(select(Client).order_by(Client.id))).all()
    return [client_out(client) for client in clients]


async def create_client(session: AsyncSession, request: ClientCreate) -> ClientCreated:
    if await session.get(Client, request.id) is not None:
        raise Conflict(f"client '{request.id}' already exists")
    now = _now()
    client = Client(
        id=request.id,
        name=request.name,
        webhook_url=request.webhook_url,
        webhook_secret=new_webhook_secret(),
        allowed_redirects=list(request.allowed_redirects),
        enabled=True,
        created_at=now,
        updated_at=now,
    )
    session.add(client)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"client '{request.id}' already exists") from None
    await announce(session, client.id)
    return ClientCreated.model_validate(client, from_attributes=True)


async def update_client(session: AsyncSession, client_id: str, request: ClientUpdate) -> ClientOut:
    client = await _client(session, client_id)
    changes = request.model_dump(exclude_unset=True)
    for field in ("name", "allowed_redirects", "enabled"):
        if changes.get(field) is not None:
            setattr(client, field, changes[field])
    if "webhook_url" in changes:
        if changes["webhook_url"] is None:
            await _refuse_if_actions_deliver(session, client_id)
        client.webhook_url = changes["webhook_url"]
    client.updated_at = _now()
    await session.flush()
    await announce(session, client_id)
    return client_out(client)


async def _refuse_if_actions_deliver(session: AsyncSession, client_id: str) -> None:
    delivering = await session.scalar(
        select(Action.name).where(Action.client_id == client_id, Action.delivery != "none").limit(1)
    )
    if delivering is not None:
        raise ValidationFailed(
            "webhook_url is needed by actions that deliver webhooks",
            errors=[{"loc": ["webhook_url"], "msg": f"action '{delivering}' delivers webhooks"}],
        )


async def delete_client(session: AsyncSession, client_id: str) -> None:
    client = await _client(session, client_id)
    await session.delete(client)
    await session.flush()
    await announce(session, client_id)


async def rotate_webhook_secret(session: AsyncSession, client_id: str) -> WebhookSecretOut:
    client = await _client(session, client_id)
    client.webhook_secret = new_webhook_secret()
    client.updated_at = _now()
    await session.flush()
    await announce(session, client_id)
    return WebhookSecretOut(webhook_secret=client.webhook_secret)


async def create_key(session: AsyncSession, client_id: str) -> KeyCreated:
    """A new API key; the plain key is returned here and never stored."""
    await _client(session, client_id)
    plain = new_api_key()
    key = ApiKey(
        id="key_" + secrets.token_urlsafe(9),
        client_id=client_id,
        prefix=plain[:12],
        key_hash=hash_api_key(plain),
        created_at=_now(),
    )
    session.add(key)
    await session.flush()
    await announce(session, client_id)
    return KeyCreated(id=key.id, key=plain, prefix=key.prefix, created_at=key.created_at)


async def list_keys(session: AsyncSession, client_id: str) -> list[KeyOut]:
    await _client(session, client_id)
    query = select(ApiKey).where(ApiKey.client_id == client_id).order_by(ApiKey.created_at)
    keys = (await session.scalars(query)).all()
    return [KeyOut.model_validate(key, from_attributes=True) for key in keys]


async def delete_key(session: AsyncSession, client_id: str, key_id: str) -> None:
    result = await session.execute(
        delete(ApiKey).where(ApiKey.client_id == client_id, ApiKey.id == key_id)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"client '{client_id}' has no key '{key_id}'")
    await announce(session, client_id)


async def put_action(
    session: AsyncSession, client_id: str, name: str, request: ActionPut
) -> ActionOut:
    client = await _client(session, client_id)
    if request.max_ttl < request.ttl:
        raise ValidationFailed(
            "max_ttl must be at least ttl",
            errors=[{"loc": ["max_ttl"], "msg": "must be >= ttl", "type": "value_error"}],
        )
    if request.delivery != "none" and not client.webhook_url:
        raise ValidationFailed(
            f"client '{client_id}' has no webhook_url, so delivery must be 'none'",
            errors=[{"loc": ["delivery"], "msg": "needs a webhook_url", "type": "value_error"}],
        )
    require_allowed(
        client_id,
        client.allowed_redirects,
        success_url=request.success_url,
        failure_url=request.failure_url,
    )
    now = _now()
    action = await session.get(Action, (client_id, name))
    if action is None:
        action = Action(client_id=client_id, name=name, created_at=now)
        session.add(action)
    for field, value in request.model_dump().items():
        setattr(action, field, value)
    action.updated_at = now
    await session.flush()
    await announce(session, client_id)
    return action_out(action)


async def _action(session: AsyncSession, client_id: str, name: str) -> Action:
    await _client(session, client_id)
    action = await session.get(Action, (client_id, name))
    if action is None:
        raise NotFound(f"client '{client_id}' has no action '{name}'")
    return action


async def get_action(session: AsyncSession, client_id: str, name: str) -> ActionOut:
    return action_out(await _action(session, client_id, name))


async def list_actions(session: AsyncSession, client_id: str) -> list[ActionOut]:
    await _client(session, client_id)
    query = select(Action).where(Action.client_id == client_id).order_by(Action.name)
    return [action_out(action) for action in (await session.scalars(query)).all()]


async def delete_action(session: AsyncSession, client_id: str, name: str) -> None:
    action = await _action(session, client_id, name)
    await session.delete(action)
    await session.flush()
    await announce(session, client_id)
