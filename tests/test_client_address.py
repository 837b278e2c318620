"""The client address the abuse limits count by: the peer, or behind trusted proxies the
right-most address of ``X-Forwarded-For`` that is not one of them."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from starlette.types import Scope

from service.client_address import UNKNOWN, ClientAddresses, parse_address
from service.config import Settings


def scope(peer: str | None, *forwarded: str) -> Scope:
    return {
        "type": "http",
        "client": (peer, 50000) if peer is not None else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


BEHIND_PROXIES = ClientAddresses(Settings(trusted_proxies="10.0.0.0/8, 192.0.2.7").trusted_proxies)


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_forwards() -> None:
    addresses = ClientAddresses()
    assert addresses.of(scope("198.51.100.4")) == "198.51.100.4"
    assert addresses.of(scope("198.51.100.4", "203.0.113.9")) == "198.51.100.4"
    assert addresses.of(scope(None)) == UNKNOWN


def test_a_peer_that_is_no_trusted_proxy_cannot_name_another_address() -> None:
    assert BEHIND_PROXIES.of(scope("198.51.100.4", "203.0.113.9")) == "198.51.100.4"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        (["203.0.113.9"], "203.0.113.9"),
        # The client wrote the left part itself; the proxies appended the rest.
        (["6.6.6.6, 203.0.113.9"], "203.0.113.9"),
        (["6.6.6.6, 203.0.113.9, 10.1.2.3"], "203.0.113.9"),
        # Several header lines are one list, in order.
        (["6.6.6.6", "203.0.113.9, 192.0.2.7"], "203.0.113.9"),
        # Only trusted proxies on the way: the left-most is where the request began.
        (["10.9.9.9, 10.1.2.3"], "10.9.9.9"),
        # A hop that is no address ends the walk at the proxy that passed it on.
        (["6.6.6.6, garbage, 10.1.2.3"], "10.1.2.3"),
        ([], "10.0.0.1"),
        # Ports and brackets as some proxies write them.
        (["203.0.113.9:4711"], "203.0.113.9"),
        (["[2001:db8::1]:4711"], "2001:db8::/64"),
    ],
)
def test_behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client(
    forwarded: list[str], client: str
) -> None:
    assert BEHIND_PROXIES.of(scope("10.0.0.1", *forwarded)) == client


def test_ipv6_clients_are_counted_by_their_64() -> None:
    addresses = ClientAddresses()
    one = addresses.of(scope("2001:db8:1:2::1"))
    assert one == addresses.of(scope("2001:db8:1:2:ffff::9")) == "2001:db8:1:2::/64"
    assert addresses.of(scope("2001:db8:1:3::1")) != one
    assert addresses.of(scope("::ffff:198.51.100.4")) == "198.51.100.4"


def test_trusted_proxies_setting_takes_addresses_and_networks() -> None:
    settings = Settings(trusted_proxies=" 10.0.0.0/8,192.0.2.7 , ::1 ")
    assert settings.trusted_proxies == (
        ip_network("10.0.0.0/8"),
        ip_network("192.0.2.7/32"),
        ip_network("::1/128"),
    )
    assert parse_address("not an address") is None
