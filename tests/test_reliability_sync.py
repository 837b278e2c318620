"""``sync`` vetoes under load: the race of issue 13, and give-backs while the database is cut.

Real ``action-links serve --workers 2`` processes and a real receiver that
refuses one call in three (``409``, after thinking longer than it takes to
accept). People keep following their link until it is used up, as people
whose redemption was refused try again.

- The veto race: a refused use is given back while other requests of the
  same link are accepted, and taken again. Every accepted redemption must
  carry its own ``webhook-id`` (and ``use`` number), so a receiver that
  deduplicates by id, as the README tells it to, applies every one of them.
- Give-backs under a database cut: some refusals cut the database (through
  ``tests/support/proxy.py``) as they are made, for less and for longer
  than a request waits for its give-back. Every use comes back, every link
  ends with exactly one accepted redemption, and no refused redemption is
  ever sent to the receiver again.

One ``serve --workers 2`` (reaching PostgreSQL through the proxy, which only
the second test cuts) serves both tests, each with a client and a receiver of
its own.

Full run (README, "Reliability"): see ``scaled`` below.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import SHOP_ORIGIN
from tests.support.database import (
    fetch,
    module_database_url,  # noqa: F401 (the module's database_url)
)
from tests.support.fleet import UNCERTAIN, follow, report
from tests.support.hooks import eventually
from tests.support.invariants import ledger_problems
from tests.support.processes import ServiceProcess, running_service
from tests.support.proxy import (
    TcpProxy,
    module_proxy,  # noqa: F401 (the module's proxy)
)
from tests.support.receiver import Answer, Received, Receiver
from tests.support.scale import scaled
from tests.support.served import ADMIN, service_env

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ACCEPT_THINK, REFUSE_THINK = 0.05, 0.3  # seconds the receiver takes to say yes, or no
ENV = {"WEBHOOK_TIMEOUT": "2", "WEBHOOK_RETRY_SCHEDULE": "0.5,0.5"}
LEASE_SECONDS = 2 + 5  # WEBHOOK_TIMEOUT + the lease's grace (service.delivery)
LINKS_AT_ONCE = 5  # links raced at the same time (their people all at once)
# A use still awaiting its receiver may be refused and come back: "used" is final
# once it has lasted longer than a receiver may take.
PATIENCE = 2 + 0.5


@pytest.fixture(scope="module")
def service(
    database_url: str, proxy: TcpProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    env = service_env(proxy.url_for(database_url), 5, **ENV)
    with running_service(env, tmp_path_factory.mktemp("vetoes"), "--workers", "2") as service:
        yield service


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().up()
    yield receiver
    receiver.down()


@pytest.fixture
def client_id(request: pytest.FixtureRequest) -> str:
    """A client of this test's own in the shared database."""
    return "shop-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]


class Vetoes:
    """The receiver's script: every third call is refused, after a longer think.

    With ``cut``, every ``cut_every``-th refusal also cuts the database for
    ``durations`` seconds in turn (one cut at a time), the moment it is made,
    so the give-back that follows meets a dead database.
    """

    def __init__(self, proxy: TcpProxy | None = None, cut_every: int = 4) -> None:
        self._calls = itertools.count()
        self._refusals = itertools.count(1)
        self._proxy = proxy
        self._cut_every = cut_every
        self._durations = itertools.cycle((1.0, 5.0))  # shorter, longer than a request waits
        self._cut_lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self.cuts: list[float] = []
        self.cutting = True

    def __call__(self, request: Received, _seen: int) -> Answer:
        if next(self._calls) % 3 != 2:
            return Answer(200, delay=ACCEPT_THINK)
        if self._proxy is not None and next(self._refusals) % self._cut_every == 0:
            self._cut(self._proxy)
        return Answer(409, json={"error": "veto"}, delay=REFUSE_THINK)

    def _cut(self, proxy: TcpProxy) -> None:
        with self._cut_lock:
            if not self.cutting or any(t.is_alive() for t in self._timers):
                return
            duration = next(self._durations)
            proxy.cut()
            timer = threading.Timer(duration, proxy.restore)
            timer.start()
            self._timers.append(timer)
            self.cuts.append(duration)

    def close(self) -> None:
        """No more cuts; the database is back once this returns."""
        with self._cut_lock:
            self.cutting = False
        for timer in self._timers:
            timer.join()


@dataclass
class Person:
    """Follows one link again and again, as someone told "try again" does, until it
    succeeds or has answered ``used`` for ``patience`` seconds in a row (a use given
    back during a database cut may read ``used`` until its lease has expired)."""

    link_id: str
    url: str
    answers: list[str] = field(default_factory=list)
    redemption_ids: list[str] = field(default_factory=list)

    async def until_done(self, patience: float, deadline: float) -> None:
        used_since: float | None = None
        while time.monotonic() < deadline:
            outcome, redemption_id = await follow(self.url)
            self.answers.append(outcome)
            if redemption_id is not None:
                self.redemption_ids.append(redemption_id)
                return
            now = time.monotonic()
            if outcome != "used":
                used_since = None
            elif used_since is None:
                used_since = now
            if used_since is not None and now - used_since >= patience:
                return
            await asyncio.sleep(0.05 if used_since is None else 0.5)


async def set_up(
    http: httpx.AsyncClient, base_url: str, webhook_url: str, client_id: str
) -> dict[str, str]:
    body = {
        "id": client_id,
        "name": "Shop",
        "webhook_url": webhook_url,
        "allowed_redirects": [f"{SHOP_ORIGIN}/"],
    }
    created = await http.post(f"{base_url}/v1/admin/clients", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    for name, max_uses in (("five", 5), ("once", 1)):
        action = {
            "success_url": f"{SHOP_ORIGIN}/ok",
            "failure_url": f"{SHOP_ORIGIN}/no",
            "delivery": "sync",
            "max_uses": max_uses,
        }
        path = f"{base_url}/v1/admin/clients/{client_id}/actions/{name}"
        assert (await http.put(path, json=action, headers=ADMIN)).status_code == 200
    key = await http.post(f"{base_url}/v1/admin/clients/{client_id}/keys", headers=ADMIN)
    return {"Authorization": f"Bearer {key.json()['key']}"}


async def mint(
    http: httpx.AsyncClient, service: ServiceProcess, headers: dict[str, str], action: str, n: int
) -> list[tuple[str, str]]:
    """``n`` links of ``action``: (id, url) each."""
    body = {"links": [{"action": action} for _ in range(n)]}
    response = await http.post(f"{service.base_url}/v1/links/batch", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return [
        (link["id"], service.base_url + "/r/" + link["token"]) for link in response.json()["links"]
    ]


@dataclass
class Deliveries:
    """What the receiver saw, and what a receiver deduplicating by ``webhook-id`` did."""

    accepted: list[Received]
    refused: list[Received]
    applied: int
    dropped: int
    sends: Counter[str]

    @classmethod
    def of(cls, receiver: Receiver) -> Deliveries:
        received = receiver.received
        accepted = [r for r in received if r.answer is not None and r.answer.status == 200]
        refused = [r for r in received if r.answer is not None and r.answer.status == 409]
        seen: set[str] = set()
        dropped = 0
        for request in accepted:  # in the order they arrived
            if request.webhook_id in seen:
                dropped += 1
            seen.add(request.webhook_id)
        sends = Counter(r.webhook_id for r in received)
        return cls(accepted, refused, len(seen), dropped, sends)

    def redemption_ids(self) -> list[str]:
        """Of every message the receiver accepted (in time, or too late to count)."""
        return [json.loads(r.body)["data"]["redemption_id"] for r in self.accepted]


async def no_decision_left(database_url: str) -> bool:
    rows = await fetch(
        database_url, "SELECT count(*) AS n FROM deliveries WHERE status <> 'delivered'"
    )
    return int(rows[0]["n"]) == 0


async def test_the_sync_veto_race_never_shares_a_webhook_id(
    database_url: str, service: ServiceProcess, client_id: str, receiver: Receiver
) -> None:
    links, racers = scaled(4, 50), scaled(10, 20)
    receiver.script = Vetoes()
    async with httpx.AsyncClient(timeout=60) as http:
        headers = await set_up(http, service.base_url, receiver.url, client_id)
        minted = await mint(http, service, headers, "five", links)
        people = [Person(*link) for link in minted for _ in range(racers)]
        started = time.monotonic()
        gate = asyncio.Semaphore(LINKS_AT_ONCE)

        async def race(link: list[Person]) -> None:
            async with gate:
                await asyncio.gather(*(p.until_done(PATIENCE, started + 600) for p in link))

        await asyncio.gather(*(race(people[i : i + racers]) for i in range(0, len(people), racers)))
        seconds = time.monotonic() - started
        await asyncio.sleep(2.0)  # a re-sent message would arrive within the schedule

    answers = Counter(a for p in people for a in p.answers)
    successes = [r for p in people for r in p.redemption_ids]
    seen = Deliveries.of(receiver)
    # ("unavailable": the receiver, in this test's busy process, answered too late.)
    assert set(answers) <= {"success", "used", "rejected", "unavailable"}, answers
    assert len(successes) == 5 * links
    audit = await fetch(database_url, "SELECT id FROM redemptions WHERE client_id = $1", client_id)
    assert sorted(r["id"] for r in audit) == sorted(successes)
    # Each accepted redemption has its own webhook-id: the deduplicating receiver
    # applied every one the people were told succeeded, and dropped none.
    assert set(successes) <= set(seen.redemption_ids())
    assert seen.dropped == 0
    assert set(seen.sends.values()) == {1}  # nothing sent twice: not a refusal, not a success
    assert await ledger_problems(database_url) == []
    rows = await fetch(
        database_url, "SELECT max(use) AS top FROM redemptions WHERE client_id = $1", client_id
    )
    assert await no_decision_left(database_url)
    report(
        "sync veto race",
        processes="serve --workers 2",
        five_use_links=links,
        people_per_link=racers,
        requests=sum(answers.values()),
        answers=dict(answers),
        accepted=len(successes),
        refused=len(seen.refused),
        receiver_answered_too_late=len(seen.accepted) - len(successes),
        distinct_webhook_ids_accepted=seen.applied,
        dropped_by_a_deduplicating_receiver=seen.dropped,
        highest_use_number=rows[0]["top"],
        seconds=round(seconds, 1),
    )


async def test_give_backs_through_database_cuts_lose_nothing(
    database_url: str,
    service: ServiceProcess,
    client_id: str,
    receiver: Receiver,
    proxy: TcpProxy,
) -> None:
    links = scaled(12, 400)
    vetoes = Vetoes(proxy, cut_every=scaled(3, 5))
    log_start = service.log_path.stat().st_size
    with contextlib.closing(vetoes):
        async with httpx.AsyncClient(timeout=60) as http:
            headers = await set_up(http, service.base_url, receiver.url, client_id)
            minted = await mint(http, service, headers, "once", links)
            receiver.script = vetoes
            people = [Person(*link) for link in minted]
            started = time.monotonic()
            gate = asyncio.Semaphore(20)

            async def person(p: Person) -> None:
                async with gate:
                    await p.until_done(LEASE_SECONDS + 4, started + 600)

            await asyncio.gather(*(person(p) for p in people))
            seconds = time.monotonic() - started
            vetoes.close()
            await eventually(
                lambda: no_decision_left(database_url),
                timeout=LEASE_SECONDS + 20,
                what="every decision settled",
            )
            await asyncio.sleep(2.0)  # a re-sent message would arrive within the schedule
        log = service.log()[log_start:]

    answers = Counter(a for p in people for a in p.answers)
    seen = Deliveries.of(receiver)
    assert vetoes.cuts, "no refusal cut the database"
    assert set(answers) <= {"success", "used", "rejected", *UNCERTAIN}, answers
    assert set(seen.sends.values()) == {1}  # no refused (or accepted) message sent again
    audit = await fetch(
        database_url, "SELECT id, link_id FROM redemptions WHERE client_id = $1", client_id
    )
    assert len(audit) == links  # every link: exactly one accepted redemption
    assert {r["id"] for r in audit} <= set(seen.redemption_ids())
    assert seen.dropped == 0
    told = [r for p in people for r in p.redemption_ids]
    assert set(told) <= {r["id"] for r in audit}
    # Whoever was not told of their success got an answer that said "maybe" (a 503
    # while the acceptance was being recorded), and their link is used: accepted.
    for p in people:
        if not p.redemption_ids:
            assert set(p.answers) & UNCERTAIN, p.answers
            assert p.link_id in {r["link_id"] for r in audit}
    assert await ledger_problems(database_url) == []
    left_to_sweep = log.count("not given back yet")
    report(
        "sync give-back under database cuts",
        processes="serve --workers 2",
        single_use_links=links,
        cuts=[f"{c:g} s" for c in vetoes.cuts],
        requests=sum(answers.values()),
        answers=dict(answers),
        refused=len(seen.refused),
        given_back_after_the_request_by_the_sweep=left_to_sweep,
        accepted=len(audit),
        accepted_but_answered_503=len(audit) - len(told),
        receiver_accepted_but_given_back=len(seen.accepted) - len(audit),
        refused_messages_sent_again=sum(seen.sends[r.webhook_id] - 1 for r in seen.refused),
        seconds=round(seconds, 1),
    )
