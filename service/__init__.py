"""Action Links: signed action links, redeemed exactly as often as allowed."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line tool (``httpx._main``: click, rich, pygments)
# whenever those happen to be installed, ~5 MB in every worker for a command the
# service never runs (bench/README.md, "Memory"). Marked absent before anything
# imports httpx, its ``import`` falls back as it does where they are not installed.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

# uvicorn imports watchfiles (the file watcher of its --reload, a native extension)
# whenever it is installed, as uvicorn[standard] installs it; the service never
# reloads. Marked absent before uvicorn is imported, uvicorn takes its stat-based
# reloader instead: ~0.7 MB less in `serve --workers 1`, whose process imports this
# package first (spawned workers import uvicorn before it, and still load it).
if "watchfiles" not in sys.modules:
    sys.modules.setdefault("watchfiles", None)  # type: ignore[arg-type]
