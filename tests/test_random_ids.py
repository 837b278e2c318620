"""Random ids read in batches (``service.random_ids``): the shape ``secrets`` gives, never twice."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator

import pytest

from service import random_ids


def test_ids_have_secrets_shapes_and_never_repeat() -> None:
    seen = {random_ids.token_urlsafe(12) for _ in range(5000)}  # several batches
    assert len(seen) == 5000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", id_) for id_ in seen)
    assert re.fullmatch(r"[0-9a-f]{16}", random_ids.token_hex(8))


@pytest.fixture
def threads_switch_often() -> Iterator[None]:
    """The GIL passed between threads every microsecond instead of every 5 ms: without
    it the few bytecodes the lock guards were hardly ever interrupted, and the test
    passed without the lock too (0 of 20 rounds failed; with it, 17 of 20 did)."""
    default = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(default)


def draw_into(taken: list[str]) -> None:
    taken.extend(random_ids.token_hex(8) for _ in range(2000))


@pytest.mark.usefixtures("threads_switch_often")
def test_threads_never_take_the_same_bytes() -> None:
    # Without the lock one round of four threads fails ~85 % of the time: five rounds.
    for _ in range(5):
        taken: list[str] = []

        threads = [threading.Thread(target=draw_into, args=(taken,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(taken)) == len(taken) == 8000


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    random_ids.token_hex(8)  # the parent holds a batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, random_ids.token_hex(8).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child != random_ids.token_hex(8)


def test_a_draw_larger_than_a_batch_is_whole() -> None:
    drawn = random_ids.random_bytes(3000)
    assert len(drawn) == 3000
    assert drawn != random_ids.random_bytes(3000)
