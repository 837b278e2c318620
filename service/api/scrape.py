"""The answer to a Prometheus scrape: the service's ``/metrics`` and the standalone dispatcher's."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service import metrics, process_metrics
from service.store import Store

NO_STORE = {"Cache-Control": "no-store"}


async def exposition(store: Store) -> Response:
    """Every metric, this process's pool and process figures sampled just before."""
    process_metrics.sample(store)
    body = await metrics.render(store)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)
