"""Health, readiness and metrics, for orchestrators and Prometheus.

Only ``/metrics`` may ask for a credential: a ``METRICS_TOKEN``, when one is configured.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from service import request_context
from service.api.deps import MetricsDep, StateDep
from service.api.openapi import operation
from service.api.routes import SERVING_APP
from service.api.scrape import NO_STORE, exposition
from service.errors import RateLimited, Unauthorized
from service.schemas import Health, NotReady, Ready

router = APIRouter(tags=["operations"], dependency_overrides_provider=SERVING_APP)


@router.get(
    "/healthz",
    **operation("checkHealth", "Liveness", response_example={"status": "ok"}),
)
async def healthz() -> Health:
    """200 while the process runs."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    **operation(
        "checkReadiness",
        "Readiness",
        response_example={"status": "ready", "schema": "0001"},
        responses={
            503: {
                "model": NotReady,
                "description": "Not ready, and why",
                "content": {
                    "application/json": {
                        "example": {"status": "unavailable", "reason": "database unreachable"}
                    }
                },
            }
        },
    ),
)
async def readyz(state: StateDep) -> JSONResponse:
    """200 when the database answers and its schema is the newest; else 503 and the reason."""
    reason = await state.readiness.problem()
    if reason is not None:
        request_context.annotate(outcome=reason)
        body = {"status": "unavailable", "reason": reason}
        return JSONResponse(body, status_code=503, headers=NO_STORE)
    return JSONResponse({"status": "ready", "schema": state.readiness.head}, headers=NO_STORE)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[MetricsDep],
    **operation(
        "getMetrics",
        "Prometheus metrics",
        problems=(Unauthorized, RateLimited),
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {
                    "text/plain": {
                        "schema": {"type": "string"},
                        "example": "action_links_links_minted_total"
                        '{client="shop",action="activate_user"} 42.0\n',
                    }
                },
            }
        },
    ),
)
async def prometheus_metrics(state: StateDep) -> Response:
    """Prometheus text exposition, summed over every worker process."""
    return await exposition(state.store)
