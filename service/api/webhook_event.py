"""The ``link.redeemed`` webhook, as the OpenAPI document describes it (3.1 ``webhooks``).

Documentation only: the route below is never mounted, it is what a client's
receiver implements. Sending is ``service.webhooks``, whose ``body``
``tests/test_openapi.py`` checks against ``LinkRedeemedEvent``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from starlette.responses import Response

from service.api import examples
from service.api.openapi import operation
from service.schemas import LinkRedeemedEvent
from service.webhooks import EVENT_TYPE

router = APIRouter()

REFUSAL = {
    "type": "object",
    "properties": {
        "error": {
            "type": "string",
            "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
            "description": "passed on to the person's failure URL as `reason=`",
        }
    },
}


@router.post(
    EVENT_TYPE,
    response_class=Response,
    tags=["webhooks"],
    response_description="Any 2xx: delivered (for a `sync` action: the redemption counts). "
    "The body is ignored.",
    **operation(
        "linkRedeemed",
        "A link was redeemed",
        request_example=examples.LINK_REDEEMED,
        responses={
            "4XX": {
                "description": "Refused (408 and 429 excepted). `sync` actions: the use is "
                "given back and the person is sent to the failure URL with `error=rejected`, "
                'plus `reason=<error>` when the body is JSON like `{"error": "out_of_stock"}`. '
                "`async` actions: the delivery is recorded as failed.",
                "content": {"application/json": {"schema": REFUSAL}},
            },
            "default": {
                "description": "Anything else (3xx, 5xx, 408, 429, no answer within "
                "`WEBHOOK_TIMEOUT`): not delivered. `sync`: the use is given back and the "
                "person sees `error=unavailable`; `async`: retried on "
                "`WEBHOOK_RETRY_SCHEDULE` (`Retry-After` is honoured on 429 and 503)."
            },
        },
    ),
)
async def link_redeemed(
    event: LinkRedeemedEvent,
    webhook_id: Annotated[
        str,
        Header(
            description="`msg_…`: the same on every attempt of one redemption; deduplicate on it",
            examples=["msg_V0FpA4Y8F0oLh8-vGtAnWJjw"],
        ),
    ],
    webhook_timestamp: Annotated[
        str,
        Header(
            description="Unix seconds of this attempt; refuse messages more than 5 minutes off",
            examples=["1795630100"],
        ),
    ],
    webhook_signature: Annotated[
        str,
        Header(
            description='`v1,` + base64 HMAC-SHA256 of `"{webhook-id}.{webhook-timestamp}.'
            "{body}\"`, keyed with the base64-decoded part of the client's `whsec_…` secret",
            examples=["v1,jg0p71uhjig3ll0E2AzhP71dOqB/z8dKD4aeDuZGuFw="],
        ),
    ],
) -> Response:
    """POSTed to the client's `webhook_url` for every redemption of an action with
    `delivery: "async"` or `"sync"`, as a [Standard Webhooks](https://www.standardwebhooks.com/)
    message: verify it with any Standard Webhooks library, on the raw body, before
    parsing it.

    Delivery is at least once: deduplicate on `webhook-id`. `async`: one attempt
    before the person is redirected, then retries in the background. `sync`: the
    receiver's answer decides whether the redemption counts.
    """
    raise NotImplementedError  # never mounted: a receiver implements it
