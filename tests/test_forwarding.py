"""app/policy/forwarding.py: which peers are trusted proxies, and the client address they forward."""

from __future__ import annotations

import pytest

from app.policy.forwarding import TrustedProxies

PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "203.0.113.7, 10.1.2.3", "203.0.113.7"),  # through two of our proxies
        # Whatever the client put in front of what our proxy appended is ignored.
        ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "1.1.1.1,2.2.2.2,203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "garbage, 203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "203.0.113.7, garbage", "127.0.0.1"),  # a proxy passed on nonsense: not a new bucket
        ("127.0.0.1", "10.9.9.9, 127.0.0.1", "10.9.9.9"),  # every hop trusted: the first one
        ("::1", "2001:db8::5", "2001:db8::5"),
        ("::ffff:127.0.0.1", "203.0.113.7", "203.0.113.7"),
        # From anyone else, the header is the client's own invention.
        ("203.0.113.9", "127.0.0.1", "203.0.113.9"),
        ("192.0.2.1", "10.0.0.1, 192.0.2.200", "192.0.2.1"),
    ],
)
def test_client_address(peer, forwarded_for, client):
    assert PROXIES.client_address(peer, forwarded_for) == client


def test_trust():
    assert PROXIES.trusts("10.200.0.1") and PROXIES.trusts("::1") and not PROXIES.trusts("11.0.0.1")
    assert not PROXIES.trusts("") and not PROXIES.trusts("not an address")
    assert not TrustedProxies([]) and PROXIES


def test_bad_entries_name_the_setting():
    with pytest.raises(ValueError, match="trusted_proxies"):
        TrustedProxies(["10.0.0.0/33"])
