"""The resources one process owns, built by the app's lifespan and shared by requests."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.config import Settings
from service.confirm import Gate
from service.db import create_session_factory, open_store, schema_head
from service.delivery import Deliverer
from service.dispatcher import Dispatcher
from service.mint import Minter
from service.rate_limits import AbuseLimits
from service.readiness import Readiness
from service.redeem import Redeemer
from service.registry import Registry
from service.store import Store
from service.tokens import TokenCodec
from service.tracing import NO_TRACING, Tracing
from service.typed_code import CodeDoor
from service.webhooks import WebhookClient


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    store: Store
    sessions: async_sessionmaker[AsyncSession]
    registry: Registry
    codec: TokenCodec
    minter: Minter
    redeemer: Redeemer
    gate: Gate
    code_door: CodeDoor
    readiness: Readiness
    http: WebhookClient
    dispatcher: Dispatcher
    tracing: Tracing
    limits: AbuseLimits

    @classmethod
    def build(cls, settings: Settings, tracing: Tracing = NO_TRACING) -> AppState:
        # The one place a process picks its database.
        store = open_store(settings, tracing)
        sessions = create_session_factory(store.engine)
        registry = Registry(sessions, ttl=settings.cache_ttl)
        codec = TokenCodec(settings.signing_keys())
        http = WebhookClient(settings.webhook_timeout)
        deliverer = Deliverer(
            http,
            registry,
            store,
            settings.webhook_timeout,
            settings.webhook_retry_schedule,
            tracing,
            lease_grace=settings.webhook_lease_grace,
        )
        redeemer = Redeemer(codec, registry, store, deliverer)
        return cls(
            settings=settings,
            store=store,
            sessions=sessions,
            registry=registry,
            codec=codec,
            minter=Minter(codec, settings.public_base_url, store),
            redeemer=redeemer,
            gate=Gate(redeemer),
            code_door=CodeDoor(redeemer),
            readiness=Readiness(store.engine, schema_head()),
            http=http,
            dispatcher=Dispatcher(
                store,
                deliverer,
                poll_interval=settings.webhook_poll_interval,
                stop_grace=settings.webhook_stop_grace,
            ),
            tracing=tracing,
            limits=AbuseLimits.build(settings, store),
        )

    async def start(self) -> None:
        """Start the background work: listening for configuration changes, and the
        webhook dispatcher, unless configured off."""
        self.store.watch(self.registry.forget)
        if self.settings.webhook_dispatcher:
            self.dispatcher.start()

    async def close(self) -> None:
        await self.dispatcher.stop()
        await self.http.aclose()
        await self.store.close()
