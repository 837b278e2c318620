"""The exchange: the caller's backend trades a success redirect's ``code`` for the redemption.

``link_id`` and ``redemption_id`` in a success URL are no proof: anyone can
type a URL, and one stays in browser histories and proxy logs. The ``code``
beside them is an exchange code (``TokenCodec.sign_exchange``): signed, bound
to the client, naming the redemption. It is worth one answer, within
``EXCHANGE_WINDOW`` of the redemption:

1. Verify the code (no I/O); anything that is not a code of this client
   (tampered, another client's, a link token, a nonce) is ``404 not_found``.
2. One atomic statement (``Store.exchange``) sets ``exchanged_at`` only if it
   is still unset and the redemption young enough, so of any number of
   concurrent exchanges, on any number of processes, exactly one wins.
3. The winner reads the redemption back; a loser reads why it lost (after
   its own statement failed, so no race can change the answer):
   already exchanged → ``409 code_used``, too old → ``410 code_expired``, gone
   (purged, or given back by a ``sync`` veto) → ``404 not_found``.

Minting a code writes nothing: it is computed on the success redirect.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from service.errors import CodeExpired, CodeUsed, NotFound
from service.store import AuditEntry, Store
from service.tokens import BadData, TokenCodec

EXCHANGE_WINDOW = timedelta(seconds=300)


def _unknown(client_id: str) -> NotFound:
    return NotFound(f"this is no exchange code of client '{client_id}'")


async def exchange(
    store: Store, codec: TokenCodec, client_id: str, code: str, now: datetime
) -> AuditEntry:
    """The redemption ``code`` names, marked exchanged at ``now``; or the problem why not."""
    try:
        claims = codec.verify_exchange(code)
    except BadData:
        raise _unknown(client_id) from None
    if claims.client_id != client_id:
        raise _unknown(client_id)
    done = await store.exchange(client_id, claims.redemption_id, now, now - EXCHANGE_WINDOW)
    entry = done.entry
    if entry is None:
        raise _unknown(client_id)
    if done.won:
        return entry
    if entry.redemption.exchanged_at is not None:
        raise CodeUsed("this code was exchanged already; a code is good for one exchange")
    raise CodeExpired(
        f"the code is older than {int(EXCHANGE_WINDOW.total_seconds())} s; "
        "exchange it as soon as the person arrives"
    )
