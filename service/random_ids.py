"""Random ids from ``os.urandom``, read many at a time.

A redemption id and a request id are drawn on every redemption; each draw of
``secrets`` is a ``getrandom()`` system call. Here the bytes are read 1 KiB at a
time (one system call per ~80 ids) from the same source. Emptied in a forked
child, which must not hand out its parent's ids; a lock keeps two threads from
taking the same bytes.
"""

from __future__ import annotations

import base64
import os
import threading

_BATCH = 1024
_pool = bytearray()
_lock = threading.Lock()
os.register_at_fork(after_in_child=_pool.clear)


def random_bytes(count: int) -> bytes:
    """``count`` bytes from ``os.urandom``, never handed out twice."""
    if count > _BATCH:  # more than a batch holds: straight from the source
        return os.urandom(count)
    with _lock:
        if len(_pool) < count:
            _pool[:] = os.urandom(_BATCH)
        taken = bytes(_pool[-count:])
        del _pool[-count:]
    return taken


def token_urlsafe(count: int) -> str:
    """As ``secrets.token_urlsafe(count)``: ``count`` random bytes, URL-safe base64 unpadded."""
    return base64.urlsafe_b64encode(random_bytes(count)).rstrip(b"=").decode("ascii")


def token_hex(count: int) -> str:
    """As ``secrets.token_hex(count)``."""
    return random_bytes(count).hex()
