"""How big the reliability runs are: small in CI, the README's figures with ``HEAVY_SCALE=full``.

CI runs every test, the ``heavy`` ones too, at the small size so that each
commit proves the machinery still works; the figures reported in the README
come from ``HEAVY_SCALE=full pytest -m heavy``.
"""

from __future__ import annotations

import os
from typing import TypeVar

N = TypeVar("N", int, float)

FULL = os.environ.get("HEAVY_SCALE", "").strip().lower() == "full"


def scaled(ci: N, full: N) -> N:
    """``full`` in a full run, ``ci`` otherwise."""
    return full if FULL else ci
