"""The ``action-links`` command: serve, migrate, keygen, and the admin operations.

Admin commands work on the database directly, so an operator can bootstrap
the first client before any admin token exists. Their output is JSON.

Nothing a person can get wrong ends in a traceback: a bad setting or flag,
and a database that is unreachable, missing or not migrated, are one line on
stderr naming the variable or flag or saying what to do (``service.config``,
``service.preflight``). Exit status: 0 done, 1 the operation could not be
done (database not ready, not found, conflict), 2 bad usage or settings.
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

from service import __version__, admin, logs, metrics
from service.config import (
    ConfigurationError,
    describe_errors,
    listening_base_url,
    load_settings,
)
from service.db import migrate, one_off_session, open_store, schema_head
from service.errors import ApiError
from service.http_limits import BoundedHttpToolsProtocol
from service.preflight import DatabaseNotReady, check_database, database_errors, schema_problem
from service.purge import BATCH_SIZE, purge
from service.schemas import (
    DEFAULT_MAX_TTL,
    DEFAULT_TTL,
    ActionPut,
    ClientCreate,
    ClientUpdate,
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
    # Unset, links point at this server as a browser on this machine reaches it
    # (workers read the same environment).
    if not os.environ.get("PUBLIC_BASE_URL"):
        os.environ["PUBLIC_BASE_URL"] = listening_base_url(args.host, args.port)
    if args.dev:
        # Imported only here: with one worker, this process is the one serving.
        from service.devmode import prepare_dev_environment

        settings = prepare_dev_environment()
    else:
        settings = load_settings()
    settings.check_serveable()
    # --dev has just migrated it. Otherwise an unreachable or missing database is
    # refused, and a schema that is behind only warned about (served not ready).
    schema = None if args.dev else schema_problem(settings)
    log_config = logs.logging_config(settings.log_level, settings.log_format)
    logs.configure(settings.log_level, settings.log_format)
    if schema is not None:
        log.warning("not ready until migrated: %s", schema)
    warning = settings.public_base_url_warning()
    if warning is not None:
        log.warning(warning)
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
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    with database_errors(settings.database_url):
        migrate(settings)
    log.info("database schema is at the newest migration, %s", schema_head())
    return 0


def cmd_dispatcher(args: argparse.Namespace) -> int:
    settings = load_settings()
    check_database(settings)
    # The same logging as `serve`: JSON lines, and the libraries that would log
    # statement parameters (webhook secrets) held at WARNING.
    logs.configure(settings.log_level, settings.log_format)
    from service.standalone import run_standalone

    ops = None if args.metrics_port is None else (args.metrics_host, args.metrics_port)
    log.info("dispatching webhooks until SIGTERM")
    asyncio.run(run_standalone(settings, ops))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(48))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    settings = load_settings()
    retention = timedelta(days=settings.redemption_retention_days)

    async def run() -> dict[str, object]:
        store = open_store(settings)
        try:
            report = await purge(store, args.now or datetime.now(UTC), retention, args.batch_size)
        finally:
            await store.close()
        return report.summary()

    check_database(settings)
    with database_errors(settings.database_url):
        summary = asyncio.run(run())
    _emit(summary)
    return 0


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {value!r}")
    return int(value)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value!r}")
    return int(value)


def _max_uses(value: str) -> int | None:
    """``--max-uses``: a positive number, or ``unlimited`` (None)."""
    if value == "unlimited":
        return None
    return _positive_int(value)


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
    settings = load_settings()

    async def run() -> Any:
        async with one_off_session(settings) as session:
            result = await operation(session)
            await session.commit()
            return result

    check_database(settings)
    with database_errors(settings.database_url):
        result = asyncio.run(run())
    if result is not None:
        _emit(result)
    return 0


def _client_create(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    request = ClientCreate(
        id=a.id, name=a.name or a.id, webhook_url=a.webhook_url, allowed_redirects=a.allow
    )

    async def op(s: Any) -> Any:
        return await admin.create_client(s, request)

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
        return await admin.update_client(s, a.client, request)

    return op


def _action_put(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    fields: dict[str, Any] = {"success_url": a.success_url, "failure_url": a.failure_url}
    for name in ("ttl", "max_ttl", "max_uses", "confirm", "delivery", "label"):
        fields[name] = getattr(a, name)
    fields["enabled"] = not a.disabled
    fields["code"] = a.code
    fields["one_click"] = a.one_click
    request = ActionPut(**fields)

    async def op(s: Any) -> Any:
        return await admin.put_action(s, a.client, a.name, request)

    return op


def _client_ops(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    async def op(s: Any) -> Any:
        match a.op:
            case "list":
                return await admin.list_clients(s)
            case "show":
                return await admin.get_client(s, a.client)
            case "delete":
                await admin.delete_client(s, a.client)
                return {"deleted": a.client}
            case "rotate-secret":
                return await admin.rotate_webhook_secret(s, a.client)
        raise AssertionError(a.op)

    return op


def _key_ops(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    async def op(s: Any) -> Any:
        match a.op:
            case "create":
                return await admin.create_key(s, a.client)
            case "list":
                return await admin.list_keys(s, a.client)
            case "delete":
                await admin.delete_key(s, a.client, a.key_id)
                return {"deleted": a.key_id}
        raise AssertionError(a.op)

    return op


def _action_ops(a: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    async def op(s: Any) -> Any:
        match a.op:
            case "list":
                return await admin.list_actions(s, a.client)
            case "show":
                return await admin.get_action(s, a.client, a.name)
            case "delete":
                await admin.delete_action(s, a.client, a.name)
                return {"deleted": a.name}
        raise AssertionError(a.op)

    return op


# --- parser ----------------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows a default only when there is one worth showing (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


OPERATION_HELP = "what to do; each prints JSON (OPERATION --help tells more)"
EPILOG = """Settings are environment variables (DATABASE_URL, SECRET_KEYS, PUBLIC_BASE_URL,
ADMIN_TOKEN, LOG_LEVEL, ...); README.md lists every one.
Exit status: 0 done; 1 not done (database unreachable, missing or not migrated,
not found, conflict); 2 bad usage or settings."""


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, **kw: Any
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` starts with ``summary`` (and the description, if any)."""
    description = summary + (f"\n\n{kw.pop('description')}" if "description" in kw else "")
    return sub.add_parser(
        name, help=summary, description=description, formatter_class=_HelpFormatter, **kw
    )


def _client_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("client", metavar="CLIENT", help="the client's id")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="action-links",
        description="Signed action links as a service: run it, migrate its database, and "
        "manage clients, API keys and actions on the database directly.",
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="what to do; `action-links COMMAND --help` tells more",
    )

    serve = _command(
        sub,
        "serve",
        "run the HTTP service",
        description="Checks the settings and the database first (reachable, migrated).\n"
        "PUBLIC_BASE_URL, the origin of minted links, defaults to this server's\n"
        "address (http://127.0.0.1:PORT when listening on 0.0.0.0 or loopback).",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (0.0.0.0: every IPv4 interface)",
    )
    # PORT and WEB_CONCURRENCY are the platform conventions (the image sets both).
    serve.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("PORT", "8000"),
        help="TCP port to listen on ($PORT when set)",
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=os.environ.get("WEB_CONCURRENCY", "1"),
        metavar="N",
        help="worker processes ($WEB_CONCURRENCY when set)",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: SQLite in ./action-links.db unless DATABASE_URL is set, "
        "generated secrets kept in ./.action-links-dev.json, migrates, prints a demo "
        "client and a curl line; never for production",
    )
    serve.set_defaults(func=cmd_serve)
    _command(
        sub, "migrate", "bring the database (DATABASE_URL) to the newest migration"
    ).set_defaults(func=cmd_migrate)
    _command(
        sub, "keygen", "print a new random signing key (for SECRET_KEYS or ADMIN_TOKEN)"
    ).set_defaults(func=cmd_keygen)
    purging = _command(
        sub,
        "purge",
        "delete counters and revocations of expired links, and old audit rows",
        description="Prints what it deleted as JSON. Every service process also purges\n"
        "every PURGE_INTERVAL seconds; audit rows are kept REDEMPTION_RETENTION_DAYS.",
    )
    purging.add_argument(
        "--now",
        type=_aware_datetime,
        default=None,
        metavar="TIME",
        help="purge as if it were this time (ISO 8601 with a UTC offset, "
        "e.g. 2027-01-01T00:00:00Z; default: now)",
    )
    purging.add_argument(
        "--batch-size",
        type=_positive_int,
        default=BATCH_SIZE,
        metavar="N",
        help="rows deleted per transaction",
    )
    purging.set_defaults(func=cmd_purge)
    dispatching = _command(
        sub,
        "dispatcher",
        "deliver queued webhooks until SIGTERM",
        description="Every service process runs one too; run this beside the service\n"
        "when it runs with WEBHOOK_DISPATCHER=false.",
    )
    dispatching.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve /healthz and /metrics on this port (default: no HTTP)",
    )
    dispatching.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address --metrics-port listens on (default: 127.0.0.1)",
    )
    dispatching.set_defaults(func=cmd_dispatcher)

    _client_commands(sub)
    _key_commands(sub)
    _action_commands(sub)
    return parser


def _client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = _command(
        sub, "client", "manage clients (the calling backends), on the database directly"
    ).add_subparsers(dest="op", required=True, metavar="OPERATION", help=OPERATION_HELP)
    create = _command(client, "create", "create a client; prints its webhook secret once")
    create.add_argument("id", metavar="ID", help="the new client's id: a-z, 0-9, _ and -")
    create.add_argument("--name", help="the name people see on confirmation pages (default: ID)")
    create.add_argument("--webhook-url", metavar="URL", help="where webhooks are POSTed")
    create.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="URL_PREFIX",
        help="a URL prefix links may redirect to; repeat for more",
    )
    create.set_defaults(admin=_client_create)
    update = _command(client, "update", "change a client; options left out stay as they are")
    _client_arg(update)
    update.add_argument("--name", help="the name people see on confirmation pages")
    update.add_argument(
        "--webhook-url", metavar="URL", help="where webhooks are POSTed; an empty string removes it"
    )
    update.add_argument(
        "--allow",
        action="append",
        metavar="URL_PREFIX",
        help="replaces the allowed redirect prefixes; repeat for more",
    )
    update.add_argument(
        "--enable", dest="enabled", action="store_const", const=True, help="enable the client"
    )
    update.add_argument(
        "--disable",
        dest="enabled",
        action="store_const",
        const=False,
        help="disable the client: its keys and links stop working",
    )
    update.set_defaults(admin=_client_update)
    _command(client, "list", "list every client").set_defaults(admin=_client_ops)
    for name, summary in (
        ("show", "show one client"),
        ("delete", "delete a client with its keys and actions (its links stop working)"),
        ("rotate-secret", "replace the client's webhook secret; prints the new one"),
    ):
        p = _command(client, name, summary)
        _client_arg(p)
        p.set_defaults(admin=_client_ops)


def _key_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    key = _command(sub, "key", "manage API keys, on the database directly").add_subparsers(
        dest="op", required=True, metavar="OPERATION", help=OPERATION_HELP
    )
    for name, summary in (
        ("create", "create an API key for a client; prints the key once"),
        ("list", "list a client's keys (ids and prefixes, never the keys)"),
    ):
        p = _command(key, name, summary)
        _client_arg(p)
        p.set_defaults(admin=_key_ops)
    p = _command(key, "delete", "delete an API key: it stops working")
    _client_arg(p)
    p.add_argument("key_id", metavar="KEY_ID", help="the key's id (key_…), from `key list`")
    p.set_defaults(admin=_key_ops)


def _action_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    action = _command(sub, "action", "manage actions, on the database directly").add_subparsers(
        dest="op", required=True, metavar="OPERATION", help=OPERATION_HELP
    )
    put = _command(
        action,
        "put",
        "create or replace an action",
        description="Options left out take their defaults (shown below), also when the\n"
        "action exists: put replaces the whole action.",
    )
    _client_arg(put)
    put.add_argument("name", metavar="NAME", help="the action's name, e.g. activate_user")
    put.add_argument(
        "--success-url",
        required=True,
        metavar="URL",
        help="where a redeemed link redirects (within the client's allowed prefixes)",
    )
    put.add_argument(
        "--failure-url", metavar="URL", help="where a refused link redirects, with error=…"
    )
    put.add_argument(
        "--ttl", type=int, default=DEFAULT_TTL, metavar="SECONDS", help="default link lifetime"
    )
    put.add_argument(
        "--max-ttl",
        type=int,
        default=DEFAULT_MAX_TTL,
        metavar="SECONDS",
        help="longest lifetime a mint may ask for",
    )
    put.add_argument(
        "--max-uses",
        type=_max_uses,
        default=1,
        metavar="N|unlimited",
        help="uses per link",
    )
    put.add_argument(
        "--confirm",
        choices=["none", "page", "auto"],
        default="none",
        help="none: GET redeems; page: a button; auto: a page that submits itself",
    )
    put.add_argument(
        "--delivery",
        choices=["none", "async", "sync"],
        default="none",
        help="webhook per redemption: none, async (retried), or sync (may refuse)",
    )
    put.add_argument("--label", help="what the confirmation page says the link does")
    put.add_argument("--disabled", action="store_true", help="create it switched off")
    put.add_argument(
        "--code", action="store_true", help="links carry a 6-digit code a person can type"
    )
    put.add_argument(
        "--one-click",
        action="store_true",
        help="RFC 8058 one-click unsubscribe: a mail provider's POST redeems the link",
    )
    put.set_defaults(admin=_action_put)
    p = _command(action, "list", "list a client's actions")
    _client_arg(p)
    p.set_defaults(admin=_action_ops)
    for name, summary in (
        ("show", "show one action"),
        ("delete", "delete an action (its links stop working)"),
    ):
        p = _command(action, name, summary)
        _client_arg(p)
        p.add_argument("name", metavar="NAME", help="the action's name")
        p.set_defaults(admin=_action_ops)


# Flags of the admin commands, by the field of the request model they fill.
FLAGS = {"id": "ID", "allowed_redirects": "--allow", "enabled": "--enable/--disable"}


def _flag(loc: Sequence[int | str]) -> str:
    field = str(loc[0]) if loc else "input"
    flag = FLAGS.get(field, "--" + field.replace("_", "-"))
    return flag if len(loc) < 2 else f"{flag} #{int(loc[1]) + 1}"


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
    except ValidationError as exc:  # a flag of an admin command
        print(f"action-links: {describe_errors(exc.errors(), _flag)}", file=sys.stderr)
        return 2
    except DatabaseNotReady as exc:
        print(f"action-links: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"action-links: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
