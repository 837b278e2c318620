"""Operator tokens from configuration (ADMIN_TOKEN, METRICS_TOKEN), compared in constant time.

Several tokens may be configured at once, so that one is rotated without
downtime. A presented token is compared with every configured one, without
stopping at a match, and as SHA-256 digests of equal length: the time taken
tells neither whether nor which token matched, nor how long they are.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def matches_any(presented: str | None, configured: Sequence[str]) -> bool:
    """Whether ``presented`` is one of ``configured`` (a missing token matches none)."""
    digest = _digest(presented or "")
    matched = False
    for token in configured:
        matched |= hmac.compare_digest(digest, _digest(token))
    return matched and bool(presented)
