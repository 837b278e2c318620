"""Admin use cases: clients, keys, actions. Shared by the admin API and the CLI.

Functions work in the caller's session and only flush; the caller commits.
Every write also announces the change in that transaction
(``service.store.changes``), so every service process forgets the client's
cached configuration as soon as the change commits.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import Conflict, NotFound, ValidationFailed
from service.models import Action, ApiKey, Client
from service.redirects import require_allowed
from service.registry import hash_api_key, new_api_key
from service.schemas import ActionPut, ClientCreate, ClientUpdate
from service.store.changes import announce
from service.webhooks import SECRET_PREFIX

WEBHOOK_SECRET_BYTES = 24


def new_webhook_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode()


def _now() -> datetime:
    return datetime.now(UTC)


async def get_client(session: AsyncSession, client_id: str) -> Client:
    client = await session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client '{client_id}'")
    return client


async def list_clients(session: AsyncSession) -> list[Client]:
    return list((await session.scalars(select(Client).order_by(Client.id))).all())


async def create_client(session: AsyncSession, request: ClientCreate) -> Client:
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
    return client


async def update_client(session: AsyncSession, client_id: str, request: ClientUpdate) -> Client:
    client = await get_client(session, client_id)
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
    return client


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
    client = await get_client(session, client_id)
    await session.delete(client)
    await session.flush()
    await announce(session, client_id)


async def rotate_webhook_secret(session: AsyncSession, client_id: str) -> Client:
    client = await get_client(session, client_id)
    client.webhook_secret = new_webhook_secret()
    client.updated_at = _now()
    await session.flush()
    await announce(session, client_id)
    return client


async def create_key(session: AsyncSession, client_id: str) -> tuple[ApiKey, str]:
    """A new API key; the plain key is returned here and never stored."""
    await get_client(session, client_id)
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
    return key, plain


async def list_keys(session: AsyncSession, client_id: str) -> list[ApiKey]:
    await get_client(session, client_id)
    query = select(ApiKey).where(ApiKey.client_id == client_id).order_by(ApiKey.created_at)
    return list((await session.scalars(query)).all())


async def delete_key(session: AsyncSession, client_id: str, key_id: str) -> None:
    result = await session.execute(
        delete(ApiKey).where(ApiKey.client_id == client_id, ApiKey.id == key_id)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"client '{client_id}' has no key '{key_id}'")
    await announce(session, client_id)


async def put_action(
    session: AsyncSession, client_id: str, name: str, request: ActionPut
) -> Action:
    client = await get_client(session, client_id)
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
    return action


async def get_action(session: AsyncSession, client_id: str, name: str) -> Action:
    await get_client(session, client_id)
    action = await session.get(Action, (client_id, name))
    if action is None:
        raise NotFound(f"client '{client_id}' has no action '{name}'")
    return action


async def list_actions(session: AsyncSession, client_id: str) -> list[Action]:
    await get_client(session, client_id)
    query = select(Action).where(Action.client_id == client_id).order_by(Action.name)
    return list((await session.scalars(query)).all())


async def delete_action(session: AsyncSession, client_id: str, name: str) -> None:
    action = await get_action(session, client_id, name)
    await session.delete(action)
    await session.flush()
    await announce(session, client_id)
