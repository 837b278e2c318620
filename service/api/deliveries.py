"""``/v1/redemptions/{id}/redeliver``: a client's backend asks for a webhook again."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from service import outbox
from service.api.deps import ClientDep, StateDep
from service.api.openapi import CLIENT_API, operation
from service.api.routes import SERVING_APP
from service.errors import Conflict, NotFound

router = APIRouter(
    prefix="/v1/redemptions", tags=["redemptions"], dependency_overrides_provider=SERVING_APP
)


@router.post(
    "/{redemption_id}/redeliver",
    response_class=Response,
    **operation(
        "redeliverRedemption",
        "Send a redemption's webhook again",
        status=202,
        problems=(*CLIENT_API, NotFound, Conflict),
    ),
)
async def redeliver(redemption_id: str, client: ClientDep, state: StateDep) -> Response:
    """Queues the webhook again, whatever its delivery's status, with the same
    `webhook-id` and body and a fresh retry schedule. No body. A redemption of an
    action without webhooks answers 409 `conflict`.
    """
    await outbox.requeue(state.store, client.id, redemption_id, datetime.now(UTC))
    state.dispatcher.wake()
    return Response(status_code=202)
