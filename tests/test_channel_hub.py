"""The memory store's channels (app/store/channels.py, through the Store interface): creation, the channel limit,
which idle channel makes room, and epochs."""

from __future__ import annotations

import pytest

from app.policy.messages import SYSTEM_CHANNELS, InvalidMessage
from app.store.base import START, Position, TooManyChannels, channel_key
from app.store.memory import MemoryStore


def _store(user_channels: int) -> MemoryStore:
    return MemoryStore(
        max_running=1, buffer_bytes=1 << 16, max_finished=1, finished_ttl=60,
        max_channels=len(SYSTEM_CHANNELS) + user_channels, channel_history=10, channel_history_bytes=1 << 16,
    )


def _publish(store: MemoryStore, name: str, data) -> int:
    return store.append(channel_key(name), "message", {"data": data}).id


def _user(store: MemoryStore) -> list[str]:
    return [c["name"] for c in store.describe_channels() if not c["system"]]


def test_the_least_recently_written_idle_channel_makes_room():
    store = _store(3)
    for n in range(5):
        _publish(store, "busy-but-old", n)
    _publish(store, "b", 1)
    _publish(store, "c", 1)
    _publish(store, "new", 1)  # forgets busy-but-old, written least recently
    assert _user(store) == ["b", "c", "new"]
    _publish(store, "b", 2)  # b is now the most recent
    _publish(store, "d", 1)
    assert _user(store) == ["b", "d", "new"]


def test_a_created_but_unwritten_channel_counts_from_its_creation():
    store = _store(2)
    store.ensure_channel("quiet")
    _publish(store, "loud", 1)
    store.ensure_channel("third")
    assert _user(store) == ["loud", "third"]


def test_subscribed_system_and_kept_channels_are_never_forgotten():
    store = _store(2)
    _publish(store, "a", 1)
    _publish(store, "b", 1)
    subscription = store.subscribe("a", "alice", pins=True)
    with pytest.raises(TooManyChannels):
        store.ensure_channel("c", keep=["b"])
    assert _user(store) == ["a", "b"]
    store.ensure_channel("c")  # b is idle and not kept
    assert _user(store) == ["a", "c"]
    store.unsubscribe(subscription)
    assert set(SYSTEM_CHANNELS) <= {c["name"] for c in store.describe_channels()}


def test_peek_never_creates():
    store = _store(1)
    assert store.peek_channel("nothing") is None
    assert "nothing" not in _user(store)
    jobs = store.peek_channel("jobs")
    assert jobs is not None and jobs.offset == 0 and jobs.epoch


def test_invalid_names_are_refused():
    with pytest.raises(InvalidMessage):
        _store(1).ensure_channel("-bad")


def test_a_subscriber_who_may_not_publish_does_not_keep_the_channel():
    store = _store(2)
    watched = store.subscribe("watched", "vera", pins=False)
    _publish(store, "watched", 1)
    epoch = store.peek_channel("watched").epoch
    _publish(store, "b", 1)
    _publish(store, "c", 1)  # room is made by forgetting "watched", read by vera only
    assert _user(store) == ["b", "c"]
    # vera stays on it: written again, the same history comes back, its epoch kept and its ids going on.
    assert store.peek_channel("watched") == Position(epoch, 1)
    assert _publish(store, "watched", 2) == 2
    assert store.peek_channel("watched") == Position(epoch, 2) and "watched" in _user(store)
    store.unsubscribe(watched)


def test_a_forgotten_channel_read_by_someone_gives_its_history_back():
    store = _store(1)
    watched = store.subscribe("watched", "vera", pins=False)
    for n in range(5):
        _publish(store, "watched", n)
    epoch = store.peek_channel("watched").epoch
    _publish(store, "other", 1)
    read = store.read(channel_key("watched"), Position(epoch, 0))
    assert [event.id for event in read.events] == [5] and read.missed == 4 and not read.reset
    store.unsubscribe(watched)


def test_a_forgotten_channel_nobody_reads_is_gone_and_comes_back_with_a_new_epoch():
    store = _store(1)
    _publish(store, "gone", 1)
    old = store.peek_channel("gone")
    _publish(store, "other", 1)
    assert store.peek_channel("gone") is None
    assert _publish(store, "gone", 1) == 1  # a new channel under the old name ...
    new = store.peek_channel("gone")
    assert new.epoch != old.epoch  # ... with a history of its own: the old ids are not its ids
    read = store.read(channel_key("gone"), old)
    assert read.reset and [event.id for event in read.events] == [1] and read.epoch == new.epoch


def test_a_subscriber_who_may_not_publish_never_makes_room():
    store = _store(1)
    _publish(store, "idle", 1)
    with pytest.raises(TooManyChannels):
        store.subscribe("new", "vera", pins=False)
    assert _user(store) == ["idle"] and store.subscriptions_of("vera") == 0
    store.unsubscribe(store.subscribe("idle", "vera", pins=False))  # an existing channel is fine


def test_subscriptions_are_counted_per_user():
    store = _store(3)
    first = [store.subscribe(name, "alice", pins=True) for name in ("a", "b", "jobs")]
    second = store.subscribe("a", "bob", pins=True)
    assert store.subscriptions_of("alice") == 3 and store.subscriptions_of("bob") == 1
    assert store.subscribers("a") == 2
    for subscription in [*first, second]:
        store.unsubscribe(subscription)
    assert store.subscriptions_of("alice") == store.subscriptions_of("bob") == store.subscribers("a") == 0


def test_channel_frames_carry_the_epoch_and_reads_of_another_epoch_reset():
    store = _store(1)
    key = channel_key("ops")
    events = [store.append(key, "message", {"n": n}) for n in range(3)]
    epoch = store.peek_channel("ops").epoch
    assert len(epoch) == 6 and epoch.isalnum()
    assert events[0].frame.startswith(f"id: {epoch}-1\n".encode())
    assert events[2].data == b'{"n":2}'
    # The start, and positions of this epoch: ordinary reads.
    assert [e.id for e in store.read(key, START).events] == [1, 2, 3]
    assert [e.id for e in store.read(key, Position(epoch, 2)).events] == [3]
    assert not store.read(key, Position(epoch, 2)).reset
    # Another epoch, or a bare number (an id from before epochs): reset, and the retained history from its start.
    for other in (Position("zzzzzz", 2), Position("", 41), 41):
        read = store.read(key, other)
        assert read.reset and read.missed == 0 and [e.id for e in read.events] == [1, 2, 3] and read.epoch == epoch
    # Waiting after another epoch's position returns at once: there is a reset to read.
    assert store.wait(key, Position("zzzzzz", 3), timeout=5)
    assert store.wait_any({key: 41}, timeout=5)
