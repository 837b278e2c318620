"""The ``action-links`` command: serve, migrate, keygen, and the admin operations.

Admin commands work on the database directly, so an operator can bootstrap
the first client before any admin token exists. Their output is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from pydantic import BaseModel, ValidationError

from service import admin, logs, metrics
from service.config import ConfigurationError, Settings
from service.db import migrate, one_off_session, open_store, schema_head
from service.devmode import prepare_dev_environment
from service.dispatcher import run_standalone
from service.errors import ApiError
from service.http_limits import BoundedHttpToolsProtocol
from service.purge import BATCH_SIZE, purge
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

log = logging.getLogger("service.cli")

# In-flight requests get this long after SIGTERM; then the lifespan shutdown runs.
GRACEFUL_SHUTDOWN_SECONDS = 8

# --- serve -------------------------------------------------------------------


def _stopped(signum: int, frame: object) -> None:
    """SIGTERM asks for a clean stop. uvicorn shuts down gracefully and then raises
    the signal again (so that the default action would end the process with it);
    this turns that into exit status 0, which is what a finished stop is."""
    raise SystemExit(0)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.dev:
        settings = prepare_dev_environment(args.port)
    else:
        settings = Settings()
    settings.check_serveable()
    log_config = logs.logging_config(settings.log_level, settings.log_format)
    logs.configure(settings.log_level, settings.log_format)
    created_metrics_dir = metrics.prepare_multiprocess_dir(args.workers)
    log.info(
        "starting on http://%s:%d with %d worker(s)",
        args.host,
        args.port,
        args.workers,
        extra={logs.FIELDS: {"config": settings.masked()}},
    )
    signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.run(
            "service.main:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=log_config,
            access_log=False,  # replaced by service.api.access: it never logs a /r/ path
            log_level=settings.log_level,
            ws="none",  # no websockets: uvicorn would log their paths
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            # httptools with limits on the request head's size, header count and
            # arrival time, which uvicorn does not have (service/http_limits.py).
            http=BoundedHttpToolsProtocol,
        )
    finally:
        if created_metrics_dir is not None:
            shutil.rmtree(created_metrics_dir, ignore_errors=True)
        log.info("stopped")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    migrate(settings)
    log.info("database schema is at the newest migration, %s", schema_head())
    return 0


def cmd_dispatcher(args: argparse.Namespace) -> int:
    settings = Settings()
    # The same logging as `serve`: JSON lines, and the libraries that would log
    # statement parameters (webhook secrets) held at WARNING.
    logs.configure(settings.log_level, settings.log_format)
    log.info("dispatching webhooks until SIGTERM")
    asyncio.run(run_standalone(settings))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(48))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    settings = Settings()
    retention = timedelta(days=settings.redemption_retention_days)

    async def run() -> dict[str, object]:
        store = open_store(settings)
        try:
            report = await purge(store, args.now or datetime.now(UTC), retention, args.batch_size)
        finally:
            await store.close()
        return report.summary()

    _emit(asyncio.run(run()))
    return 0


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {value!r}")
    return int(value)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value!r}")
    return int(value)


def _aware_datetime(value: str) -> datetime:
    """``--now``: an ISO 8601 time with a UTC offset (``2027-01-01T00:00:00Z``)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give a UTC offset, e.g. 2027-01-01T00:00:00Z")
    return parsed


# --- admin operations ----------------------------------------------------------


def _emit(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") for v in value]
    print(json.dumps(value, indent=2))


def _run_admin(operation: Callable[[Any], Awaitable[Any]]) -> int:
    async def run() -> Any:
        async with one_off_session(Settings()) as session:
            result = await operation(session)
            await session.commit()
            return result

    result = asyncio.run(run())
    if result is not None:
        _emit(result)
    return 0


def _client_create(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    request = ClientCreate(
        id=a.id, name=a.name or a.id, webhook_url=a.webhook_url, allowed_redirects=a.allow
    )

    async def op(s: Any) -> Any:
        return ClientCreated.model_validate(
            await admin.create_client(s, request), from_attributes=True
        )

    return op


def _client_update(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    fields: dict[str, Any] = {}
    if a.name is not None:
        fields["name"] = a.name
    if a.webhook_url is not None:
        fields["webhook_url"] = a.webhook_url or None
    if a.allow is not None:
        fields["allowed_redirects"] = a.allow
    if a.enabled is not None:
        fields["enabled"] = a.enabled
    request = ClientUpdate(**fields)

    async def op(s: Any) -> Any:
        client = await admin.update_client(s, a.client, request)
        return ClientOut.model_validate(client, from_attributes=True)

    return op


def _action_put(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    fields: dict[str, Any] = {"success_url": a.success_url, "failure_url": a.failure_url}
    for name in ("ttl", "max_ttl", "confirm", "delivery", "label"):
        if getattr(a, name) is not None:
            fields[name] = getattr(a, name)
    if a.max_uses is not None:
        fields["max_uses"] = None if a.max_uses == "unlimited" else int(a.max_uses)
    fields["enabled"] = not a.disabled
    request = ActionPut(**fields)

    async def op(s: Any) -> Any:
        action = await admin.put_action(s, a.client, a.name, request)
        return ActionOut.model_validate(action, from_attributes=True)

    return op


def _client_ops(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    async def op(s: Any) -> Any:
        match a.op:
            case "list":
                clients = await admin.list_clients(s)
                return [ClientOut.model_validate(c, from_attributes=True) for c in clients]
            case "show":
                client = await admin.get_client(s, a.client)
                return ClientOut.model_validate(client, from_attributes=True)
            case "delete":
                await admin.delete_client(s, a.client)
                return {"deleted": a.client}
            case "rotate-secret":
                client = await admin.rotate_webhook_secret(s, a.client)
                return WebhookSecretOut(webhook_secret=client.webhook_secret)
        raise AssertionError(a.op)

    return op


def _key_ops(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    async def op(s: Any) -> Any:
        match a.op:
            case "create":
                key, plain = await admin.create_key(s, a.client)
                return KeyCreated(
                    id=key.id, key=plain, prefix=key.prefix, created_at=key.created_at
                )
            case "list":
                keys = await admin.list_keys(s, a.client)
                return [KeyOut.model_validate(k, from_attributes=True) for k in keys]
            case "delete":
                await admin.delete_key(s, a.client, a.key_id)
                return {"deleted": a.key_id}
        raise AssertionError(a.op)

    return op


def _action_ops(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    async def op(s: Any) -> Any:
        match a.op:
            case "list":
                actions = await admin.list_actions(s, a.client)
                return [ActionOut.model_validate(x, from_attributes=True) for x in actions]
            case "show":
                action = await admin.get_action(s, a.client, a.name)
                return ActionOut.model_validate(action, from_attributes=True)
            case "delete":
                await admin.delete_action(s, a.client, a.name)
                return {"deleted": a.name}
        raise AssertionError(a.op)

    return op


# --- parser ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="action-links", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    # PORT and WEB_CONCURRENCY are the platform conventions (the image sets both).
    serve.add_argument(
        "--port", type=_port, default=os.environ.get("PORT", "8000"), help="default: $PORT or 8000"
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=os.environ.get("WEB_CONCURRENCY", "1"),
        help="default: $WEB_CONCURRENCY or 1",
    )
    serve.add_argument(
        "--dev", action="store_true", help="embedded SQLite, generated secrets, a demo client"
    )
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="bring the database to the newest migration").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser("keygen", help="print a new random signing key").set_defaults(func=cmd_keygen)
    purging = sub.add_parser(
        "purge", help="delete counters and revocations of expired links, and old audit rows"
    )
    purging.add_argument(
        "--now",
        type=_aware_datetime,
        default=None,
        help="purge as if it were this time (ISO 8601 with offset); default: now",
    )
    purging.add_argument("--batch-size", type=_positive_int, default=BATCH_SIZE, metavar="N")
    purging.set_defaults(func=cmd_purge)
    sub.add_parser(
        "dispatcher", help="deliver queued webhooks (also runs inside every service process)"
    ).set_defaults(func=cmd_dispatcher)

    client = sub.add_parser("client", help="manage clients").add_subparsers(
        dest="op", required=True
    )
    create = client.add_parser("create")
    create.add_argument("id")
    create.add_argument("--name")
    create.add_argument("--webhook-url")
    create.add_argument("--allow", action="append", default=[], metavar="URL_PREFIX")
    create.set_defaults(admin=_client_create)
    update = client.add_parser("update")
    update.add_argument("client")
    update.add_argument("--name")
    update.add_argument("--webhook-url", help="empty string removes it")
    update.add_argument("--allow", action="append", metavar="URL_PREFIX")
    update.add_argument("--enable", dest="enabled", action="store_const", const=True)
    update.add_argument("--disable", dest="enabled", action="store_const", const=False)
    update.set_defaults(admin=_client_update)
    client.add_parser("list").set_defaults(admin=_client_ops)
    for name in ("show", "delete", "rotate-secret"):
        p = client.add_parser(name)
        p.add_argument("client")
        p.set_defaults(admin=_client_ops)

    key = sub.add_parser("key", help="manage API keys").add_subparsers(dest="op", required=True)
    for name in ("create", "list"):
        p = key.add_parser(name)
        p.add_argument("client")
        p.set_defaults(admin=_key_ops)
    p = key.add_parser("delete")
    p.add_argument("client")
    p.add_argument("key_id")
    p.set_defaults(admin=_key_ops)

    action = sub.add_parser("action", help="manage actions").add_subparsers(
        dest="op", required=True
    )
    put = action.add_parser("put", help="create or replace an action")
    put.add_argument("client")
    put.add_argument("name")
    put.add_argument("--success-url", required=True)
    put.add_argument("--failure-url")
    put.add_argument("--ttl", type=int)
    put.add_argument("--max-ttl", type=int)
    put.add_argument("--max-uses", help="a number, or 'unlimited'")
    put.add_argument("--confirm", choices=["none", "page", "auto"])
    put.add_argument("--delivery", choices=["none", "async", "sync"])
    put.add_argument("--label")
    put.add_argument("--disabled", action="store_true")
    put.set_defaults(admin=_action_put)
    p = action.add_parser("list")
    p.add_argument("client")
    p.set_defaults(admin=_action_ops)
    for name in ("show", "delete"):
        p = action.add_parser(name)
        p.add_argument("client")
        p.add_argument("name")
        p.set_defaults(admin=_action_ops)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "admin"):
            return _run_admin(args.admin(args))
        result: int = args.func(args)
        return result
    except ConfigurationError as exc:
        print(f"action-links: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"action-links: invalid input: {exc.errors(include_url=False)}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"action-links: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
