"""What the client sends, which calls it repeats, and how failures surface.

A scripted HTTP server on 127.0.0.1 (``tests.support.receiver``) plays the
answers a real service gives rarely (429, 503 with ``Retry-After``, a
proxy's 502); the real service shows a database that is gone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from action_links_client import (
    ActionLinksError,
    Client,
    MintRequest,
    RateLimited,
    RetryPolicy,
    TransportError,
    Unavailable,
)

from tests.support.processes import free_port
from tests.support.receiver import Answer, Received, Receiver
from tests.support.shop_service import Shop

pytestmark = pytest.mark.slow  # the session's shop: a real service process

API_KEY = "alk_test-key-for-a-scripted-server-0123456789"
LINK = {
    "id": "bGluay1pZA",
    "url": "https://links.example.com/r/token",
    "token": "token",
    "action": "go",
    "subject": None,
    "expires_at": "2030-01-01T00:00:00Z",
    "max_uses": 1,
}
STATUS = {"id": "abc", "uses": 0, "revoked": False, "first_redeemed_at": None}


def problem(status: int, code: str, retry_after: str | None = None) -> Answer:
    body = {"type": "about:blank", "title": code, "status": status, "code": code, "detail": code}
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return Answer(status=status, json=body, headers=headers)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """One server for the module: stopping one takes ~0.2 s (uvicorn's shutdown)."""
    receiver = Receiver().up()
    yield receiver
    receiver.down()


@pytest.fixture
def server(receiver: Receiver) -> Receiver:
    """The module's server as new: answering 200, nothing received (each client
    connects anew, and a request a test left unanswered is forgotten)."""
    return receiver.reset()


def client_of(server: Receiver, **options: Any) -> Client:
    return Client(f"http://127.0.0.1:{server.port}", API_KEY, **options)


def then(first: Answer, rest: Answer) -> Callable[[Received, int], Answer]:
    """``first`` to the first request, ``rest`` to every later one."""
    return lambda _request, seen: first if seen == 0 else rest


# --- what is sent ------------------------------------------------------------


def test_mint_sends_only_what_the_caller_set(server: Receiver) -> None:
    server.answer(Answer(status=201, json=LINK))
    with client_of(server) as client:
        link = client.mint("go")
        client.mint("go", subject="42", code=False, supersede=True, data={"a": None})
    bare, chosen = server.received
    assert json.loads(bare.body) == {"action": "go"}
    assert json.loads(chosen.body) == {
        "action": "go",
        "subject": "42",
        "data": {"a": None},
        "code": False,
        "supersede": True,
    }
    assert bare.headers["authorization"] == f"Bearer {API_KEY}"
    assert bare.headers["user-agent"].startswith("action-links-client/")
    assert link.expires_at.utcoffset() is not None
    assert "token" not in repr(link)


def test_batch_items_are_sent_as_given(server: Receiver) -> None:
    server.answer(Answer(status=201, json={"links": [LINK, LINK]}))
    with client_of(server) as client:
        links = client.mint_batch([MintRequest("go", max_uses=2), {"action": "go", "x": 1}])
    assert len(links) == 2
    sent = json.loads(server.received[0].body)
    assert sent == {"links": [{"action": "go", "max_uses": 2}, {"action": "go", "x": 1}]}


# --- retries ---------------------------------------------------------------


def test_an_idempotent_call_waits_out_retry_after(server: Receiver) -> None:
    server.script = then(problem(503, "unavailable", retry_after="1"), Answer(json=STATUS))
    started = time.monotonic()
    with client_of(server) as client:
        status = client.status("abc")
    assert time.monotonic() - started >= 1.0
    assert status.uses == 0
    assert [r.path for r in server.received] == ["/v1/links/abc"] * 2


def test_retry_after_as_an_http_date(server: Receiver) -> None:
    server.answer(
        problem(429, "rate_limited", retry_after=formatdate(time.time() + 2, usegmt=True))
    )
    with client_of(server, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(RateLimited) as caught:
            client.status("abc")
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 2


IDEMPOTENT: dict[str, Callable[[Client], object]] = {
    "status": lambda c: c.status("abc"),
    "revoke": lambda c: c.revoke("abc"),
    "inspect": lambda c: c.inspect("token"),
    "redemption": lambda c: c.redemption("abc"),
    "redemptions": lambda c: list(c.redemptions(subject="42")),
    "redeliver": lambda c: c.redeliver("abc"),
}
NOT_IDEMPOTENT: dict[str, Callable[[Client], object]] = {
    "mint": lambda c: c.mint("go"),
    "mint_batch": lambda c: c.mint_batch([MintRequest("go")]),
    "revoke_subject": lambda c: c.revoke_subject("42"),
    "exchange": lambda c: c.exchange("code"),
    "redeem_code": lambda c: c.redeem_code("token", "123456"),
    "resend": lambda c: c.resend("hint"),
}


@pytest.mark.parametrize("call", IDEMPOTENT.values(), ids=IDEMPOTENT.keys())
@pytest.mark.parametrize("status", [429, 503])
def test_idempotent_calls_are_retried_until_the_attempts_run_out(
    server: Receiver, call: Callable[[Client], object], status: int
) -> None:
    server.answer(problem(status, "busy", retry_after="0"))
    with client_of(server, retry=RetryPolicy(attempts=3, backoff=0.01)) as client:
        with pytest.raises(ActionLinksError) as caught:
            call(client)
    assert type(caught.value) is (RateLimited if status == 429 else Unavailable)
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        status,
        "busy",
        0.0,
    )
    assert len(server.received) == 3


@pytest.mark.parametrize("call", NOT_IDEMPOTENT.values(), ids=NOT_IDEMPOTENT.keys())
def test_other_calls_are_never_retried(server: Receiver, call: Callable[[Client], object]) -> None:
    server.answer(problem(503, "unavailable", retry_after="0"))
    with client_of(server, retry=RetryPolicy(attempts=5, backoff=0.01)) as client:
        with pytest.raises(Unavailable):
            call(client)
    assert len(server.received) == 1


def test_a_long_retry_after_is_left_to_the_caller(server: Receiver) -> None:
    server.answer(problem(503, "unavailable", retry_after="120"))
    started = time.monotonic()
    with client_of(server) as client:
        with pytest.raises(Unavailable) as caught:
            client.status("abc")
    assert time.monotonic() - started < 5
    assert caught.value.retry_after == 120.0
    assert len(server.received) == 1


def test_connection_errors_are_retried_until_the_service_is_back() -> None:
    server = Receiver()  # its port refuses connections until it is up
    threading.Timer(0.3, server.up).start()
    server.answer(Answer(json=STATUS))
    try:
        with client_of(server, retry=RetryPolicy(attempts=8, backoff=0.2, max_backoff=1)) as c:
            assert c.status("abc").id == "abc"
    finally:
        server.down()


def test_a_timeout_is_a_transport_error_after_the_retries(server: Receiver) -> None:
    server.answer(Answer(json=STATUS, delay=3))
    with client_of(server, timeout=0.3, retry=RetryPolicy(attempts=2, backoff=0.01)) as client:
        with pytest.raises(TransportError) as caught:
            client.status("abc")
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert len(server.received) == 2


# --- errors --------------------------------------------------------------------


def test_nothing_listening_is_a_transport_error() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with Client(nowhere, API_KEY, retry=RetryPolicy(attempts=2, backoff=0.01)) as client:
        for call in (lambda: client.status("abc"), lambda: client.mint("go")):
            with pytest.raises(TransportError) as caught:
                call()
            error = caught.value
            assert isinstance(error, ActionLinksError)
            assert (error.status, error.code, error.retry_after, error.problem) == (
                None,
                None,
                None,
                {},
            )
            assert isinstance(error.__cause__, httpx.ConnectError)


def test_answers_that_are_not_problems(server: Receiver) -> None:
    server.answer(Answer(status=502))  # a proxy in front of the service
    with client_of(server) as client:
        with pytest.raises(ActionLinksError) as caught:
            client.status("abc")
    assert type(caught.value) is ActionLinksError
    assert (caught.value.status, caught.value.code, caught.value.detail) == (
        502,
        None,
        "Bad Gateway",
    )
    server.answer(Answer(json={"something": "else"}))
    with client_of(server) as client:
        with pytest.raises(ActionLinksError, match="does not follow") as unexpected:
            client.status("abc")
    assert unexpected.value.status == 200


def test_a_database_that_is_gone_is_unavailable(shop: Shop) -> None:
    with shop.client(retry=RetryPolicy(attempts=1)) as client:
        link = client.mint("activate")
        shop.proxy.cut()
        try:
            with pytest.raises(Unavailable) as caught:
                client.status(link.id)
        finally:
            shop.proxy.restore()
        assert (caught.value.status, caught.value.code) == (503, "unavailable")
        assert caught.value.retry_after == 5.0
    with shop.client(retry=RetryPolicy(attempts=10, backoff=0.5, max_backoff=2)) as client:
        assert client.status(link.id).uses == 0  # and the shared service is well again
