"""Abuse limits: too many failed attempts from one address, too many mints with one key.

Failure limits (API.md, "Abuse limits") hold across every service process
together, so they are counted in the database (DESIGN.md, idea 5), and only
when an attempt fails: genuine traffic writes nothing and reads nothing.

- ``auth``: failed API-key and admin-token authentications per client
  address (``RATE_LIMIT_AUTH_FAILURES``). Once over the limit, the address
  gets ``429`` for every authenticated request until its window ends, right
  credentials too: that is what stops guessing.
- ``link``: tokens under ``/r/`` that fail verification, per client address
  (``RATE_LIMIT_LINK_FAILURES``). Once over the limit, forged tokens from the
  address get the ``429`` page; a valid link still works from it (nothing can
  be guessed through a signature, and people behind one shared address with
  a scanner keep their links).

Each failure is one atomic upsert (``Store.count_failure``); its answer, the
window's new total, decides. The window starts at an address's first failure
and lasts the limit's period, so the attempt after the limit's count is the
first ``429``, whichever process it reaches. A process that has seen an
address reach its limit remembers it until the window ends
(``BlockedAddresses``, bounded), so a flood does not write once per request;
a process that has not yet seen it learns it from the next failure. Failures
wait for a database connection in a line of their own, at most half the
pool, so a flood of them cannot starve genuine requests of connections. If
the database cannot count a failure, the failure is answered as it would
have been without limits (401, 400 page): a forged token never causes a 503.

Mints per API key (``RATE_LIMIT_MINTS``, off by default) are not failures
and minting stays write-free, so they are counted in each process's memory
with the ``limits`` library (a fixed window): the effective limit of a
deployment is this setting times its processes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import limits
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from starlette.types import Scope

from service import metrics
from service.client_address import ClientAddresses
from service.config import Settings
from service.errors import DatabaseUnavailable, RateLimited
from service.registry import hash_api_key
from service.store import Store

log = logging.getLogger(__name__)

BLOCKED_CAPACITY = 10_000
"""Addresses a process remembers as over a limit; past that, the oldest is forgotten
(its next failure asks the database again)."""
COUNT_WAIT_SECONDS = 5.0
"""How long a failure may wait in line to be counted (as long as for a pooled connection)."""
UNAVAILABLE_LOG_INTERVAL = 10.0
"""Seconds between two warnings that failures go uncounted (a flood would repeat it)."""


class Limited(StrEnum):
    """What a failure limit counts; the value is the ``scope`` of its counters."""

    AUTH = "auth"
    LINK = "link"


def wait_seconds(seconds: float) -> int:
    """A ``Retry-After``: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


class BlockedAddresses:
    """(limit, address) → the monotonic time its window ends; at most ``capacity`` of them."""

    def __init__(self, capacity: int = BLOCKED_CAPACITY) -> None:
        self._capacity = capacity
        self._until: dict[tuple[Limited, str], float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def wait(self, kind: Limited, address: str) -> int | None:
        """Seconds left while ``address`` is blocked; None when it is not (any more)."""
        until = self._until.get((kind, address))
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._until[(kind, address)]
            return None
        return wait_seconds(left)

    def block(self, kind: Limited, address: str, seconds: float) -> None:
        if len(self._until) >= self._capacity and (kind, address) not in self._until:
            now = time.monotonic()
            self._until = {key: until for key, until in self._until.items() if until > now}
            while len(self._until) >= self._capacity:
                del self._until[next(iter(self._until))]  # the oldest entry
        self._until[(kind, address)] = time.monotonic() + seconds


class FailureLimits:
    """The failure limits of one process, counted in the shared database."""

    def __init__(
        self,
        store: Store,
        addresses: ClientAddresses,
        rates: Mapping[Limited, limits.RateLimitItem],
        line: int,
    ) -> None:
        self._store = store
        self._addresses = addresses
        self._rates = dict(rates)
        self._line = asyncio.Semaphore(max(1, line))
        self._blocked = BlockedAddresses()
        self._warned_at = -math.inf

    def refused(self, scope: Scope, kind: Limited) -> int | None:
        """Seconds to wait when this request's address is known to be over the limit;
        None otherwise. No I/O: the check every authenticated request makes."""
        if not self._blocked:
            return None
        wait = self._blocked.wait(kind, self._addresses.of(scope))
        if wait is not None:
            metrics.rate_limited(kind.value)
        return wait

    async def failed(self, scope: Scope, kind: Limited) -> int | None:
        """Count a failed attempt of this request; seconds to wait when it is over the limit
        (answer ``429``), None when it is within (answer the failure as usual)."""
        rate = self._rates.get(kind)
        if rate is None:
            return None
        address = self._addresses.of(scope)
        wait = self._blocked.wait(kind, address) or await self._count(kind, address, rate)
        if wait is not None:
            metrics.rate_limited(kind.value)
        return wait

    async def _count(self, kind: Limited, address: str, rate: limits.RateLimitItem) -> int | None:
        try:
            async with asyncio.timeout(COUNT_WAIT_SECONDS):
                await self._line.acquire()
        except TimeoutError:
            self._uncounted("no database connection free in time")
            return None
        try:
            wait = self._blocked.wait(kind, address)  # learned while waiting in line
            if wait is not None:
                return wait
            now = datetime.now(UTC)
            window = timedelta(seconds=rate.get_expiry())
            counted = await self._store.count_failure(kind.value, address, now, window)
        except DatabaseUnavailable as exc:
            self._uncounted(exc.cause_name)
            return None
        finally:
            self._line.release()
        left = (counted.window_ends - now).total_seconds()
        if counted.failures >= rate.amount and left > 0:
            if self._blocked.wait(kind, address) is None:
                log.warning(
                    "abuse limit reached: %d %s failures from %s; refused for %d s",
                    counted.failures,
                    kind.value,
                    address,
                    wait_seconds(left),
                )
            self._blocked.block(kind, address, left)
        if counted.failures > rate.amount:
            return wait_seconds(left)
        return None

    def _uncounted(self, cause: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= UNAVAILABLE_LOG_INTERVAL:
            self._warned_at = now
            log.warning("failed attempts go uncounted: database unavailable (%s)", cause)


class MintLimit:
    """Links minted per API key, in this process's memory (``limits``, a fixed window).

    A batch counts as its number of links and is refused whole when it does
    not fit in what is left of the window.
    """

    def __init__(self, rate: limits.RateLimitItem | None) -> None:
        self._rate = rate
        self._limiter = FixedWindowRateLimiter(MemoryStorage()) if rate is not None else None

    @property
    def enabled(self) -> bool:
        return self._limiter is not None

    def take(self, api_key: str, links: int) -> None:
        """Count ``links`` mints of ``api_key``, or raise ``RateLimited`` (nothing counted)."""
        if self._limiter is None or self._rate is None:
            return
        identity = hash_api_key(api_key)
        if self._limiter.test(self._rate, identity, cost=links):
            self._limiter.hit(self._rate, identity, cost=links)
            return
        reset = self._limiter.get_window_stats(self._rate, identity).reset_time
        metrics.rate_limited("mint")
        raise RateLimited(
            f"this API key may mint {self._rate} (a batch counts each link)",
            wait_seconds(reset - time.time()),
        )


@dataclass(frozen=True, slots=True)
class AbuseLimits:
    """Every abuse limit of one process, built from its settings."""

    failures: FailureLimits
    mints: MintLimit

    @classmethod
    def build(cls, settings: Settings, store: Store) -> AbuseLimits:
        configured = {
            Limited.AUTH: settings.rate_limit_auth_failures,
            Limited.LINK: settings.rate_limit_link_failures,
        }
        rates = {kind: limits.parse(rate) for kind, rate in configured.items() if rate}
        addresses = ClientAddresses(settings.trusted_proxies)
        failures = FailureLimits(store, addresses, rates, line=settings.database_pool_size // 2)
        mints = MintLimit(
            limits.parse(settings.rate_limit_mints) if settings.rate_limit_mints else None
        )
        return cls(failures, mints)
