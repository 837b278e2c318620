"""Random ids read in batches (``service.random_ids``): the shape ``secrets`` gives, never twice."""

from __future__ import annotations

import os
import re
import threading

from service import random_ids


def test_ids_have_secrets_shapes_and_never_repeat() -> None:
    seen = {random_ids.token_urlsafe(12) for _ in range(5000)}  # several batches
    assert len(seen) == 5000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", id_) for id_ in seen)
    assert re.fullmatch(r"[0-9a-f]{16}", random_ids.token_hex(8))


def test_threads_never_take_the_same_bytes() -> None:
    taken: list[str] = []

    def draw() -> None:
        taken.extend(random_ids.token_hex(8) for _ in range(2000))

    threads = [threading.Thread(target=draw) for _ in range(4)]
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
