"""Action Links: signed action links, redeemed exactly as often as allowed."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line tool (``httpx._main``: click, rich, pygments)
# whenever those happen to be installed, ~5 MB in every worker for a command the
# service never runs (bench/README.md, "Memory"). Marked absent before anything
# imports httpx, its ``import`` falls back as it does where they are not installed.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
