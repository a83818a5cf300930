"""Unit tests for app/store/channels.py ChannelHub: creation, the channel limit and which idle channel makes room."""

from __future__ import annotations

import pytest

from app.policy.messages import SYSTEM_CHANNELS, InvalidMessage
from app.store.channels import ChannelHub, TooManyChannels


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
    with hub.subscribed("a", "alice"):
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


def test_a_subscriber_who_may_not_publish_does_not_keep_the_channel():
    hub = _hub(2)
    watched = hub.subscribe("watched", "vera", pins=False)
    hub.publish("watched", "message", 1, None)
    hub.publish("b", "message", 1, None)
    hub.publish("c", "message", 1, None)  # room is made by forgetting "watched", read by vera only
    assert _user(hub) == ["b", "c"]
    # vera stays on it: written again, the same log comes back, its ids going on.
    assert hub.peek("watched") is watched.log
    assert hub.publish("watched", "message", 2, None) == 2
    assert hub.log("watched") is watched.log and "watched" in _user(hub)
    hub.unsubscribe(watched)


def test_a_forgotten_channel_read_by_someone_gives_its_history_back():
    hub = _hub(1)
    watched = hub.subscribe("watched", "vera", pins=False)
    for n in range(5):
        hub.publish("watched", "message", n, None)
    hub.publish("other", "message", 1, None)
    read = watched.log.read_after(0)
    assert [event.id for event in read.events] == [5] and read.missed_bytes == 4


def test_a_forgotten_channel_nobody_reads_is_gone():
    hub = _hub(1)
    hub.publish("gone", "message", 1, None)
    hub.publish("other", "message", 1, None)
    assert hub.peek("gone") is None
    assert hub.publish("gone", "message", 1, None) == 1  # a new channel under the old name


def test_a_subscriber_who_may_not_publish_never_makes_room():
    hub = _hub(1)
    hub.publish("idle", "message", 1, None)
    with pytest.raises(TooManyChannels):
        hub.subscribe("new", "vera", pins=False)
    assert _user(hub) == ["idle"] and hub.subscriptions_of("vera") == 0
    hub.unsubscribe(hub.subscribe("idle", "vera", pins=False))  # an existing channel is fine


def test_subscriptions_are_counted_per_user():
    hub = _hub(3)
    first = [hub.subscribe(name, "alice") for name in ("a", "b", "jobs")]
    second = hub.subscribe("a", "bob")
    assert hub.subscriptions_of("alice") == 3 and hub.subscriptions_of("bob") == 1
    assert hub.subscribers("a") == 2
    for subscription in [*first, second]:
        hub.unsubscribe(subscription)
    assert hub.subscriptions_of("alice") == hub.subscriptions_of("bob") == hub.subscribers("a") == 0
