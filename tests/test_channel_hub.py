"""Unit tests for app/channels.py ChannelHub: creation, the channel limit and which idle channel makes room."""

from __future__ import annotations

import pytest

from app.channels import ChannelHub, TooManyChannels
from app.messages import SYSTEM_CHANNELS, InvalidMessage


def _hub(user_channels: int) -> ChannelHub:
    return ChannelHub(max_channels=len(SYSTEM_CHANNELS) + user_channels, history=10, history_bytes=1 << 16)


def _user(hub: ChannelHub) -> list[str]:
    return [c["name"] for c in hub.describe() if not c["system"]]


def test_the_least_recently_written_idle_channel_makes_room():
    hub = _hub(3)
    for n in range(5):
        hub.publish("busy-but-old", "message", n, None)
    hub.publish("b", "message", 1, None)
    hub.publish("c", "message", 1, None)
    hub.publish("new", "message", 1, None)  # forgets busy-but-old, written least recently
    assert _user(hub) == ["b", "c", "new"]
    hub.publish("b", "message", 2, None)  # b is now the most recent
    hub.publish("d", "message", 1, None)
    assert _user(hub) == ["b", "d", "new"]


def test_a_created_but_unwritten_channel_counts_from_its_creation():
    hub = _hub(2)
    hub.log("quiet")
    hub.publish("loud", "message", 1, None)
    hub.log("third")
    assert _user(hub) == ["loud", "third"]


def test_subscribed_system_and_kept_channels_are_never_forgotten():
    hub = _hub(2)
    hub.publish("a", "message", 1, None)
    hub.publish("b", "message", 1, None)
    with hub.subscribed("a"):
        with pytest.raises(TooManyChannels):
            hub.log("c", keep=["b"])
        assert _user(hub) == ["a", "b"]
        hub.log("c")  # b is idle and not kept
        assert _user(hub) == ["a", "c"]
    assert set(SYSTEM_CHANNELS) <= {c["name"] for c in hub.describe()}


def test_peek_never_creates():
    hub = _hub(1)
    assert hub.peek("nothing") is None
    assert "nothing" not in _user(hub)
    assert hub.peek("jobs") is hub.log("jobs")


def test_invalid_names_are_refused():
    with pytest.raises(InvalidMessage):
        _hub(1).log("-bad")
