"""Which peers are trusted reverse proxies, and which client a request really comes from. Pure code.

A proxy appends the address it received the request from to
``X-Forwarded-For``; whatever is to the left of that was sent by the client
and may be invented. So the client is the rightmost address that is not one
of our trusted proxies, read from the right, and only when the peer itself
is a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The ``trusted_proxies`` setting (or another list of peers, such as ``metrics_allow``): addresses or CIDRs."""

    def __init__(self, entries: Iterable[str], setting: str = "trusted_proxies") -> None:
        try:
            self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(e, strict=False) for e in entries)
        except ValueError as exc:
            raise ValueError(f"{setting}: {exc}") from None

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` (an IP address as text) is one of the trusted proxies."""
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket's ::ffff:127.0.0.1 is 127.0.0.1
        return any(ip in network for network in self.networks)

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: the peer, or, from a trusted proxy, the rightmost untrusted X-Forwarded-For hop.

        An entry that is not an address (garbage a proxy passed on) ends the
        walk at the last trustworthy hop, so it can never be used to pick a
        new throttling bucket at will.
        """
        if not forwarded_for or not self.trusts(peer):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return client
            client = hop
            if not self.trusts(hop):
                return hop
        return client  # every hop is a trusted proxy: the leftmost one is where the request began
