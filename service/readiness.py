"""Readiness: may this process take traffic? Yes when the database answers and its
schema is at the newest migration this code ships.

A process started before ``action-links migrate`` ran (or after a newer
image was deployed against an old schema) would fail on its first query;
saying "not ready" instead keeps the orchestrator from routing traffic to it.
The newest revision is read from the migration scripts once, at startup.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import schema_revision
from service.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Readiness:
    engine: AsyncEngine
    head: str

    async def problem(self) -> str | None:
        """None when ready, else the reason, one line for the operator."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                current = await schema_revision(self.engine)
        except (TimeoutError, DatabaseUnavailable, SQLAlchemyError) as exc:
            log.debug("readiness: database check failed: %s", type(exc).__name__)
            return "database unreachable"
        if current != self.head:
            return f"schema not migrated: at {current or 'none'}, need {self.head}"
        return None
