"""``/v1/redemptions/{id}/redeliver``: a client's backend asks for a webhook again."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from service import outbox
from service.api.deps import ClientDep, StateDep
from service.api.openapi import problem_responses

router = APIRouter(
    prefix="/v1/redemptions", tags=["redemptions"], responses=problem_responses(401, 503)
)


@router.post(
    "/{redemption_id}/redeliver",
    status_code=202,
    response_class=Response,
    responses=problem_responses(404, 409),
)
async def redeliver(redemption_id: str, client: ClientDep, state: StateDep) -> Response:
    """Queue the webhook again (same ``webhook-id``, fresh retry schedule) → 202, no body."""
    await outbox.requeue(state.store, client.id, redemption_id, datetime.now(UTC))
    state.dispatcher.wake()
    return Response(status_code=202)
