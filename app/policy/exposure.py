"""Refuse to serve beyond loopback without authentication. Pure code."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def is_loopback(host: str) -> bool:
    """True for loopback addresses and 'localhost'."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything


def exposure_problem(addresses: Iterable[object], auth_configured: bool, insecure_no_auth: bool) -> str | None:
    """Why starting would be unsafe, or None. ``addresses`` are gunicorn's (host, port) tuples or socket paths."""
    if auth_configured:
        return None
    public = [f"{a[0]}:{a[1]}" for a in addresses if isinstance(a, tuple) and not is_loopback(str(a[0]))]
    if not public or insecure_no_auth:
        return None
    return (
        f"refusing to listen on {', '.join(public)} without authentication: anyone who can reach it could run "
        "commands on this host. Configure [[tokens]], [[users]] or trusted_proxies (see README, 'Security model'), "
        "bind to 127.0.0.1, or set insecure_no_auth = true if something in front of it really does authenticate."
    )
