"""Where a request comes from: the peer's address, or X-Forwarded-For behind trusted proxies.

``X-Forwarded-For`` is whatever the client wrote, plus one address per proxy it passed. Only a
proxy the operator names (``TRAINFLOW_TRUSTED_PROXIES``) is believed, and only about its own
peer: the chain is read from the right, skipping trusted hops, and the first address that is
not a trusted proxy is the client. Without trusted proxies the header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from trainflow.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8, ::1"`` as networks; a bad entry is a start-up error."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(
                f"TRAINFLOW_TRUSTED_PROXIES: {entry!r} is not an address or network (e.g. 10.0.0.0/8)."
            ) from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``), or None."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address; ``forwarded_for`` holds every X-Forwarded-For header, in order."""
    hop = parse_address(peer or "")
    if hop is None:
        return peer or "unknown"
    if not trusted or not _is_trusted(hop, trusted):
        return str(hop)
    chain = [entry for header in forwarded_for for entry in header.split(",")]
    for entry in reversed(chain):
        address = parse_address(entry)
        if address is None:
            # The proxy wrote something it should not have: count the request against it.
            return str(hop)
        if not _is_trusted(address, trusted):
            return str(address)
        hop = address
    return str(hop)


def limit_key(address: str) -> str:
    """What the login limits count by: the address, or its /64 for IPv6 (one subscriber's block)."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return address


def _is_trusted(address: Address, trusted: tuple[Network, ...]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)
