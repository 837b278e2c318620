"""Who is asking: the client address the abuse limits count by.

The socket's peer, unless that peer is one of the ``TRUSTED_PROXIES``: then
``X-Forwarded-For`` is read from the right, each proxy having appended the
address it was talking to, and the first address that is not a trusted proxy
is the client's. What lies to the left of it was written by the client and
is ignored, so a client cannot choose the address it is counted under by
sending the header itself. A hop that is not an address (a proxy that writes
garbage) ends the walk at the trusted proxy that passed it on.

An IPv6 client is counted by its /64: one subscriber usually has a whole
/64, and counting single addresses would let it rotate through them freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from starlette.types import Scope

IPV6_PREFIX = 64
UNKNOWN = "unknown"  # no peer address (a test transport, a Unix socket)
FORWARDED_FOR = b"x-forwarded-for"

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def parse_address(text: str) -> Address | None:
    """An address as a peer or a proxy writes it: ``a.b.c.d``, ``a:b::c``, ``[a:b::c]``,
    optionally with a port (``a.b.c.d:port``, ``[a:b::c]:port``); else None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def counted_as(address: Address) -> str:
    """The key an address is counted under: itself (IPv4), or its /64 (IPv6)."""
    if isinstance(address, IPv6Address):
        return str(ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


class ClientAddresses:
    """Finds the client address of a request, trusting only the configured proxies."""

    def __init__(self, trusted_proxies: Sequence[Network] = ()) -> None:
        self._trusted = tuple(trusted_proxies)

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)

    def of(self, scope: Scope) -> str:
        peer = scope.get("client")
        address = parse_address(peer[0]) if peer else None
        if address is None:
            return UNKNOWN if not peer else str(peer[0])[:64]
        if self._trusted and self._is_trusted(address):
            address = self._forwarded(scope, address)
        return counted_as(address)

    def _forwarded(self, scope: Scope, proxy: Address) -> Address:
        """The right-most address of ``X-Forwarded-For`` that is not a trusted proxy."""
        hops = [
            hop
            for name, value in scope["headers"]
            if name == FORWARDED_FOR
            for hop in value.decode("latin-1").split(",")
        ]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                return proxy  # garbage: the proxy that passed it on is who we know
            if not self._is_trusted(address):
                return address
            proxy = address
        return proxy  # every hop was a trusted proxy: the left-most is the client
