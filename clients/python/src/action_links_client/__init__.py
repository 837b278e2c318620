"""Action Links for Python backends: mint, inspect, revoke, exchange, verify webhooks.

``Client`` blocks, ``AsyncClient`` awaits; both speak the service's HTTP
contract with one API key. Errors are described in ``_errors`` (the tree is
in its docstring); retries in ``RetryPolicy``.
"""

from action_links_client._async_client import AsyncClient
from action_links_client._client import Client
from action_links_client._errors import (
    ActionLinksError,
    NotFound,
    RateLimited,
    TransportError,
    Unauthorized,
    Unavailable,
    WebhookVerificationError,
)
from action_links_client._models import (
    Delivery,
    InspectedLink,
    Inspection,
    Link,
    LinkStatus,
    MintRequest,
    Redemption,
)
from action_links_client._retry import RetryPolicy
from action_links_client._version import __version__
from action_links_client._webhooks import verify_webhook

__all__ = [
    "ActionLinksError",
    "AsyncClient",
    "Client",
    "Delivery",
    "InspectedLink",
    "Inspection",
    "Link",
    "LinkStatus",
    "MintRequest",
    "NotFound",
    "RateLimited",
    "Redemption",
    "RetryPolicy",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]
