"""Webhook delivery against a real receiver on 127.0.0.1, the app in-process.

Every request the receiver gets is verified with the ``standardwebhooks``
package. Retry schedules, the dispatcher's poll interval and its shutdown grace
are shortened (``WEBHOOK_*`` settings), so "eventually" below means well under
a second; a test that would pass whether or not the dispatcher is told of a
redelivery polls at the longest interval instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from service import outbox
from service.config import Settings
from service.db import open_store
from service.webhooks import Attempt, Verdict
from tests.conftest import SHOP_ORIGIN, Tenant, link_path, make_tenant
from tests.support.database import POSTGRES, SQLITE, fetch
from tests.support.hooks import all_delivered, deliveries, eventually, query_of
from tests.support.processes import free_port
from tests.support.receiver import NEVER, Answer, RawReceiver, Received, Receiver
from tests.support.served import serving

pytestmark = pytest.mark.backends(POSTGRES, SQLITE)

Headers = dict[str, str]
SCHEDULE = [0.05, 0.1, 0.1, 0.2, 0.5, 1.0, 1.0, 1.0]
POLL = 0.05  # the dispatcher's look at the outbox, when nothing woke it
# Attempts that are to time out stop here (the tests of a bound the attempt keeps);
# the others have 1 s, so that a loaded machine does not time out a prompt answer.
SHORT_TIMEOUT = 0.5


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_timeout": 1.0,
            "webhook_retry_schedule": SCHEDULE,
            "cache_ttl": 0.0,
            "webhook_poll_interval": POLL,
            "webhook_stop_grace": 0.1,
        }
    )


@pytest.fixture(scope="module")
def shared_receiver() -> Iterator[Receiver]:
    # Requests left hanging (NEVER) are not waited for when it goes down.
    receiver = Receiver(shutdown_grace=0).up()
    yield receiver
    receiver.down()


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    """The module's receiver, up and as new (each test's app is gone by the next test)."""
    return shared_receiver.reset()


async def hooked_tenant(
    http: httpx.AsyncClient, admin: Headers, url: str, delivery: str = "async", **action: Any
) -> Tenant:
    tenant = await make_tenant(http, admin, "shop", webhook_url=url)
    await tenant.put_action("activate", admin, delivery=delivery, **action)
    return tenant


def verified(received: list[Received], secret: str) -> list[dict[str, Any]]:
    return [request.verify(secret) for request in received]


async def redemption_ids(database_url: str) -> list[str]:
    return [r["id"] for r in await fetch(database_url, "SELECT id FROM redemptions ORDER BY seq")]


# --- async ---------------------------------------------------------------------------


async def test_async_delivers_the_documented_event(
    http: httpx.AsyncClient, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    shop = await hooked_tenant(http, admin_headers, receiver.url)
    link = await shop.mint(subject="42", data={"plan": "pro", "seats": [1, 2]}, max_uses=3)
    query = query_of(await http.get(link_path(link)))
    redemption_id = query["redemption_id"][0]

    [request] = await receiver.wait_for(1)
    payload = request.verify(shop.webhook_secret)
    row = (await fetch(database_url, "SELECT * FROM redemptions"))[0]
    redeemed_at = row["redeemed_at"].isoformat().replace("+00:00", "Z")
    assert payload == {
        "type": "link.redeemed",
        "timestamp": redeemed_at,
        "data": {
            "redemption_id": redemption_id,
            "link_id": link["id"],
            "action": "activate",
            "subject": "42",
            "data": {"plan": "pro", "seats": [1, 2]},
            "use": 1,
            "max_uses": 3,
            "redeemed_at": redeemed_at,
        },
    }
    assert request.headers["content-type"] == "application/json"
    assert request.webhook_id.startswith("msg_")
    job = (await deliveries(database_url))[redemption_id]
    assert (job["status"], job["attempts"], job["last_error"]) == ("delivered", 1, None)
    assert job["delivered_at"] is not None
    assert job["leased_until"] is None


async def test_async_redirects_to_success_whatever_the_receiver_says(
    settings: Settings, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    receiver.answer(Answer(500))
    # No dispatcher: its retry, due 0.1 s later, would race the read below.
    async with serving(settings.model_copy(update={"webhook_dispatcher": False})) as http:
        shop = await hooked_tenant(http, admin_headers, receiver.url)
        query = query_of(await http.get(link_path(await shop.mint())))
    assert "redemption_id" in query
    job = (await deliveries(database_url))[query["redemption_id"][0]]
    assert (job["status"], job["attempts"], job["last_error"]) == ("pending", 1, "HTTP 500")


async def test_receiver_down_then_up_is_delivered_under_one_webhook_id(
    http: httpx.AsyncClient, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    receiver.down()
    shop = await hooked_tenant(http, admin_headers, receiver.url)
    links = [await shop.mint(), await shop.mint()]
    for link in links:
        assert "redemption_id" in query_of(await http.get(link_path(link)))
    jobs = await deliveries(database_url)
    assert {(j["status"], j["last_error"]) for j in jobs.values()} <= {
        ("pending", "connection refused"),
        ("pending", None),  # the second one may skip its inline attempt: known down
    }

    async def retried() -> bool:
        return all(j["attempts"] >= 2 for j in (await deliveries(database_url)).values())

    await eventually(retried, what="retries while the receiver is down")
    # Back up, but each message's first arrival is answered 503 once more.
    receiver.script = lambda _request, seen: Answer(503) if seen == 0 else Answer(204)
    receiver.up()
    await eventually(lambda: all_delivered(database_url, 2), what="delivery after coming back")

    for redemption_id, job in (await deliveries(database_url)).items():
        assert job["status"] == "delivered"
        assert job["last_error"] is None
        arrived = [r for r in receiver.received if redemption_id in r.body.decode()]
        assert [r.answer.status for r in arrived if r.answer] == [503, 204]
        assert len({r.webhook_id for r in arrived}) == 1
        assert len({r.body for r in arrived}) == 1
        verified(arrived, shop.webhook_secret)
        assert job["attempts"] >= 2 + len(arrived)


async def test_a_receiver_known_to_be_down_is_not_waited_for(
    settings: Settings, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    receiver.answer(Answer(delay=NEVER))
    quick = {"webhook_dispatcher": False, "webhook_timeout": SHORT_TIMEOUT}
    async with serving(settings.model_copy(update=quick)) as http:
        shop = await hooked_tenant(http, admin_headers, receiver.url)
        first, second = await shop.mint(), await shop.mint()
        one = query_of(await http.get(link_path(first)))["redemption_id"][0]
        two = query_of(await http.get(link_path(second)))["redemption_id"][0]
    jobs = await deliveries(database_url)
    assert (jobs[one]["attempts"], jobs[one]["last_error"]) == (1, "timeout after 0.5 s")
    assert (jobs[two]["attempts"], jobs[two]["leased_until"]) == (0, None)
    assert len(receiver.received) == 1


async def test_an_outcome_is_recorded_only_under_the_lease_it_was_attempted_with(
    settings: Settings, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    receiver.answer(Answer(503))
    async with serving(settings.model_copy(update={"webhook_dispatcher": False})) as http:
        shop = await hooked_tenant(http, admin_headers, receiver.url)
        query_of(await http.get(link_path(await shop.mint())))  # one failed attempt, pending
    store = open_store(settings)
    try:
        now = datetime.now(UTC) + timedelta(seconds=5)  # the retry is due
        lease = now + timedelta(seconds=30)
        [job] = await store.lease_due(now, lease, limit=10)
        before = await deliveries(database_url)
        # A process that stalled past its lease, which another then took.
        lost = dataclasses.replace(job, lease=lease - timedelta(seconds=10))
        for attempt in (
            Attempt(Verdict.DELIVERED, status=200),
            Attempt(Verdict.UNAVAILABLE, error="HTTP 503", status=503),
        ):
            assert not await outbox.record(store, lost, attempt, now, SCHEDULE)
        assert await deliveries(database_url) == before
        assert before[job.redemption.redemption_id]["leased_until"] == lease
        # The holder of the lease records its outcome.
        assert await outbox.record(store, job, Attempt(Verdict.DELIVERED), now, SCHEDULE)
        [row] = (await deliveries(database_url)).values()
        assert (row["status"], row["attempts"], row["leased_until"]) == ("delivered", 2, None)
    finally:
        await store.close()


# --- sync ----------------------------------------------------------------------------


async def uses(database_url: str) -> int:
    """Uses taken: the counters', and the audit rows that are a single-use link's claim."""
    counters = await fetch(database_url, "SELECT coalesce(sum(uses), 0) AS n FROM claims")
    carried = await fetch(
        database_url, "SELECT count(*) AS n FROM redemptions WHERE claim_expires_at IS NOT NULL"
    )
    return int(counters[0]["n"]) + int(carried[0]["n"])


async def test_sync_accepted_is_success(
    http: httpx.AsyncClient, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    shop = await hooked_tenant(http, admin_headers, receiver.url, delivery="sync")
    link = await shop.mint(subject="7")
    query = query_of(await http.get(link_path(link)))
    [request] = receiver.received  # the call was made before the person was answered
    assert request.verify(shop.webhook_secret)["data"]["redemption_id"] == query["redemption_id"][0]
    job = (await deliveries(database_url))[query["redemption_id"][0]]
    assert (job["status"], job["attempts"], job["leased_until"]) == ("delivered", 1, None)


async def test_sync_refused_gives_the_use_back_under_a_new_webhook_id(
    http: httpx.AsyncClient, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    receiver.answer(Answer(409, json={"error": "out_of_stock"}))
    shop = await hooked_tenant(http, admin_headers, receiver.url, delivery="sync")
    link = await shop.mint()
    response = await http.get(link_path(link))
    assert response.headers["location"].startswith(f"{SHOP_ORIGIN}/oops?")
    query = query_of(response)
    assert query == {"error": ["rejected"], "reason": ["out_of_stock"], "link_id": [link["id"]]}
    assert await redemption_ids(database_url) == []
    assert await deliveries(database_url) == {}
    assert await uses(database_url) == 0

    receiver.answer(Answer(200))
    assert "redemption_id" in query_of(await http.get(link_path(link)))
    refused, accepted = receiver.received
    # Another redemption, so another message: a receiver that applied the refused
    # one anyway (and answered too late) must not drop this one as a repeat.
    assert refused.webhook_id != accepted.webhook_id
    first, second = verified([refused, accepted], shop.webhook_secret)
    assert first["data"]["redemption_id"] != second["data"]["redemption_id"]
    assert (first["data"]["use"], second["data"]["use"]) == (1, 2)
    assert await uses(database_url) == 1
    assert query_of(await http.get(link_path(link)))["error"] == ["used"]


async def test_a_use_given_back_and_taken_again_is_a_new_message(
    http: httpx.AsyncClient, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    """Issue 13's race: A takes use 1 and its receiver thinks; B takes use 2 and is
    accepted; A is refused and gives its use back; C takes a use and is accepted.
    B and C must differ in ``webhook-id`` and ``use``, or a receiver that
    deduplicates by id (as the README tells it to) drops C, told "success"."""
    applied: set[str] = set()
    thinking = asyncio.Event()
    b_done = threading.Event()

    def script(request: Received, _seen: int) -> Answer:
        if not receiver.received[:-1]:  # the first request: A, answered once B is done
            thinking.set()
            return Answer(409, json={"error": "changed_my_mind"}, until=b_done)
        applied.add(request.webhook_id)  # a deduplicating receiver applies each id once
        return Answer(200)

    receiver.script = script
    shop = await hooked_tenant(http, admin_headers, receiver.url, delivery="sync", max_uses=5)
    link = await shop.mint()
    a = asyncio.ensure_future(http.get(link_path(link)))
    await asyncio.wait_for(thinking.wait(), 10)
    b = query_of(await http.get(link_path(link)))
    b_done.set()
    assert query_of(await a)["error"] == ["rejected"]
    c = query_of(await http.get(link_path(link)))

    accepted = [r for r in receiver.received if r.answer is not None and r.answer.status == 200]
    payloads = verified(accepted, shop.webhook_secret)
    assert [p["data"]["redemption_id"] for p in payloads] == [
        b["redemption_id"][0],
        c["redemption_id"][0],
    ]
    assert len({r.webhook_id for r in accepted}) == 2
    assert applied == {r.webhook_id for r in accepted}
    assert [p["data"]["use"] for p in payloads] == [2, 3]
    rows = await fetch(database_url, "SELECT use FROM redemptions ORDER BY seq")
    assert [r["use"] for r in rows] == [2, 3]
    assert await uses(database_url) == 2


@pytest.mark.parametrize("case", ["port closed", "503", "302", "429", "too slow", "bad reason"])
async def test_sync_unavailable_or_odd_answers_give_the_use_back(
    settings: Settings,
    admin_headers: Headers,
    receiver: Receiver,
    database_url: str,
    case: str,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks" if case == "port closed" else receiver.url
    answer, expected = {
        "port closed": (Answer(), "unavailable"),
        "503": (Answer(503, headers={"retry-after": "60"}), "unavailable"),
        "302": (Answer(302, headers={"location": f"{receiver.url}/elsewhere"}), "unavailable"),
        "429": (Answer(429, json={"error": "slow_down"}), "unavailable"),
        "too slow": (Answer(delay=3), "unavailable"),
        "bad reason": (Answer(422, json={"error": "no such <thing>"}), "rejected"),
    }[case]
    receiver.answer(answer)
    timeout = SHORT_TIMEOUT if case == "too slow" else 1.0
    async with serving(settings.model_copy(update={"webhook_timeout": timeout})) as http:
        shop = await hooked_tenant(http, admin_headers, url, delivery="sync")
        link = await shop.mint()
        query = query_of(await http.get(link_path(link)))
        assert query == {"error": [expected], "link_id": [link["id"]]}
        assert await uses(database_url) == 0
        assert all(r.path == "/hooks" for r in receiver.received)  # no redirect followed

        receiver.answer(Answer(200))
        patch = {"webhook_url": receiver.url}
        assert (
            await http.patch("/v1/admin/clients/shop", json=patch, headers=admin_headers)
        ).is_success
        assert "redemption_id" in query_of(await http.get(link_path(link)))
    verified(receiver.received, shop.webhook_secret)


async def test_sync_failures_without_failure_url_are_pages(
    http: httpx.AsyncClient, admin_headers: Headers, receiver: Receiver
) -> None:
    shop = await hooked_tenant(http, admin_headers, receiver.url, "sync", failure_url=None)
    receiver.answer(Answer(400, json={"error": "nope"}))
    refused = await http.get(link_path(await shop.mint()))
    assert (refused.status_code, refused.headers["content-type"][:9]) == (409, "text/html")
    receiver.answer(Answer(500))
    unavailable = await http.get(link_path(await shop.mint()))
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"]


# --- redeliver, rotation ------------------------------------------------------------------


async def test_redeliver_sends_the_same_message_again(
    settings: Settings, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    # The dispatcher would not look again for 30 to 60 s: only being woken by the
    # redelivery (Dispatcher.wake) explains the message arriving within 10.
    asleep = settings.model_copy(update={"webhook_poll_interval": 60.0})
    async with serving(asleep) as http:
        shop = await hooked_tenant(http, admin_headers, receiver.url)
        redemption_id = query_of(await http.get(link_path(await shop.mint())))["redemption_id"][0]
        await receiver.wait_for(1)

        path = f"/v1/redemptions/{redemption_id}/redeliver"
        response = await http.post(path, headers=shop.headers)
        assert response.status_code == 202
        first, again = await receiver.wait_for(2, timeout=10)
        assert (first.webhook_id, first.body) == (again.webhook_id, again.body)
        verified([first, again], shop.webhook_secret)

        async def delivered() -> bool:
            job = (await deliveries(database_url))[redemption_id]
            return bool(job["status"] == "delivered")

        await eventually(delivered, timeout=10, what="redelivery recorded")

        assert (await http.post(path)).status_code == 401
        unknown = await http.post("/v1/redemptions/nope/redeliver", headers=shop.headers)
        assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
        assert unknown.headers["content-type"] == "application/problem+json"
        mall = await make_tenant(http, admin_headers, "mall")
        assert (await http.post(path, headers=mall.headers)).status_code == 404
        plain = query_of(await http.get(link_path(await mall.mint())))["redemption_id"][0]
        no_hooks = await http.post(f"/v1/redemptions/{plain}/redeliver", headers=mall.headers)
        assert (no_hooks.status_code, no_hooks.json()["code"]) == (409, "conflict")


async def test_redeliver_leaves_an_attempt_in_flight_to_its_process(
    settings: Settings, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    """A redelivery asked for while the dispatcher is sending the job keeps that lease:
    no other process may take the job meanwhile."""
    receiver.script = lambda _request, seen: Answer(500) if seen == 0 else Answer(delay=NEVER)
    async with serving(settings.model_copy(update={"webhook_timeout": 10.0})) as http:
        shop = await hooked_tenant(http, admin_headers, receiver.url)
        query = query_of(await http.get(link_path(await shop.mint())))
        redemption_id = query["redemption_id"][0]

        async def leased_by_the_dispatcher() -> bool:
            job = (await deliveries(database_url))[redemption_id]
            return job["attempts"] == 1 and job["leased_until"] is not None

        # The retry hangs for up to 10 s: the lease is held all that time.
        await eventually(leased_by_the_dispatcher, what="the dispatcher's retry in flight")
        lease = (await deliveries(database_url))[redemption_id]["leased_until"]
        path = f"/v1/redemptions/{redemption_id}/redeliver"
        assert (await http.post(path, headers=shop.headers)).status_code == 202
        job = (await deliveries(database_url))[redemption_id]
        assert job["leased_until"] == lease
        assert (job["status"], job["attempts"]) == ("pending", 0)


async def test_failed_after_the_last_attempt_and_redelivered(
    settings: Settings, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    receiver.answer(Answer(500))
    async with serving(settings.model_copy(update={"webhook_retry_schedule": [0.1]})) as http:
        shop = await hooked_tenant(http, admin_headers, receiver.url)
        query = query_of(await http.get(link_path(await shop.mint())))
        redemption_id = query["redemption_id"][0]

        async def status_is(status: str) -> bool:
            return bool((await deliveries(database_url))[redemption_id]["status"] == status)

        await eventually(lambda: status_is("failed"), what="failed after two attempts")
        job = (await deliveries(database_url))[redemption_id]
        assert (job["attempts"], job["last_error"]) == (2, "HTTP 500")

        receiver.answer(Answer(200))
        path = f"/v1/redemptions/{redemption_id}/redeliver"
        assert (await http.post(path, headers=shop.headers)).status_code == 202
        await eventually(lambda: status_is("delivered"), what="delivered after redelivery")
    assert len({r.webhook_id for r in receiver.received}) == 1
    assert [r.answer.status for r in receiver.received if r.answer] == [500, 500, 200]


async def test_webhooks_after_rotation_use_the_new_secret(
    http: httpx.AsyncClient, admin_headers: Headers, receiver: Receiver
) -> None:
    shop = await hooked_tenant(http, admin_headers, receiver.url)
    rotated = await http.post("/v1/admin/clients/shop/webhook-secret", headers=admin_headers)
    new_secret = rotated.json()["webhook_secret"]
    assert new_secret != shop.webhook_secret
    query_of(await http.get(link_path(await shop.mint())))
    # One request, or more if the machine was slow enough for a retry: each one signed
    # with the new secret only.
    for request in await receiver.wait_for(1):
        request.verify(new_secret)
        with pytest.raises(WebhookVerificationError):
            request.verify(shop.webhook_secret)


# --- receivers that misbehave -----------------------------------------------------------

BIG = 50 * 1024 * 1024


@pytest.mark.parametrize(
    ("answer", "last_error"),
    [
        (Answer(delay=2), f"timeout after {SHORT_TIMEOUT:g} s"),
        (Answer(delay=NEVER), f"timeout after {SHORT_TIMEOUT:g} s"),
        (Answer(503, body_size=BIG), "HTTP 503"),
        (Answer(400, body_size=BIG), "HTTP 400"),
        (Answer(400, drip=0.4), "HTTP 400"),
        (Answer(200, headers={"x-padding": "a" * 200_000}), "invalid HTTP response"),
        (Answer(200, body_size=BIG), None),
    ],
    ids=["slow", "never", "huge 503", "huge 400", "dripping 400", "huge headers", "huge 200"],
)
async def test_misbehaving_receivers_cost_bounded_time_and_memory(
    settings: Settings,
    admin_headers: Headers,
    receiver: Receiver,
    database_url: str,
    answer: Answer,
    last_error: str | None,
) -> None:
    receiver.answer(answer)
    # What is to time out has the short limit; the others, 1 s to answer.
    timeout = SHORT_TIMEOUT if (last_error or "").startswith("timeout") else 1.0
    no_dispatcher = {"webhook_dispatcher": False, "webhook_timeout": timeout}
    async with serving(settings.model_copy(update=no_dispatcher)) as http:
        shop = await hooked_tenant(http, admin_headers, receiver.url)
        link = await shop.mint()
        async with asyncio.timeout(15):  # a generous bound: the attempt itself stops at 1 s
            query = query_of(await http.get(link_path(link)))
    job = (await deliveries(database_url))[query["redemption_id"][0]]
    assert (job["attempts"], job["last_error"]) == (1, last_error)


@pytest.mark.parametrize(
    ("reply", "last_error"),
    [
        (b"garbage\r\n\r\n" * 100, "invalid HTTP response"),
        (b"HTTP/1.1 abc\r\n\r\n", "invalid HTTP response"),
        (b"", "connection closed without a response"),
    ],
    ids=["garbage", "bad status line", "silent close"],
)
async def test_answers_that_are_not_http(
    settings: Settings, admin_headers: Headers, database_url: str, reply: bytes, last_error: str
) -> None:
    raw = RawReceiver(reply).up()
    try:
        no_dispatcher = settings.model_copy(update={"webhook_dispatcher": False})
        async with serving(no_dispatcher) as http:
            shop = await hooked_tenant(http, admin_headers, raw.url, delivery="sync")
            await shop.put_action("later", admin_headers, delivery="async")
            later = query_of(await http.get(link_path(await shop.mint("later"))))
            # Sync calls the receiver even though it is now known to be down.
            sync = query_of(await http.get(link_path(await shop.mint())))
    finally:
        raw.down()
    assert sync["error"] == ["unavailable"]
    assert raw.connections == 2
    job = (await deliveries(database_url))[later["redemption_id"][0]]
    assert (job["attempts"], job["last_error"]) == (1, last_error)


# --- the embedded SQLite default ------------------------------------------------------------


async def test_shutdown_hands_back_the_leases_it_holds(
    settings: Settings, admin_headers: Headers, receiver: Receiver, database_url: str
) -> None:
    receiver.script = lambda _request, seen: Answer(503) if seen == 0 else Answer(delay=NEVER)
    async with serving(settings.model_copy(update={"webhook_timeout": 10.0})) as http:
        shop = await hooked_tenant(http, admin_headers, receiver.url)
        query_of(await http.get(link_path(await shop.mint())))

        async def leased_by_dispatcher() -> bool:
            rows = await fetch(
                database_url, "SELECT 1 FROM deliveries WHERE leased_until IS NOT NULL"
            )
            return len(receiver.received) == 2 and len(rows) == 1

        await eventually(leased_by_dispatcher, what="the dispatcher to hold the job")
    [job] = (await deliveries(database_url)).values()
    assert (job["status"], job["attempts"], job["leased_until"]) == ("pending", 1, None)
