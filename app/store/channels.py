"""The memory store's channels: a bounded event log per channel, their epochs, and who is subscribed.

Publishing encodes a message once; every subscriber writes the same bytes.
Subscribers read at their own pace from the shared log, so a slow one never
delays the others; one that falls behind the history is told how many
messages it missed.

Each channel's history gets a new epoch (base.new_epoch) when the channel is
made, so ids from an earlier history (before a restart, or before the channel
was forgotten and made again) are never taken for ids of this one.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any

from ..policy.messages import SYSTEM_CHANNELS, check_channel_name
from .base import LogEvent, Position, Subscription, TooManyChannels, channel_key, new_epoch
from .budget import MemoryBudget
from .eventlog import EventLog


class ChannelHub:
    """All channels of this worker.

    A subscription keeps its channel from being forgotten to make room only if
    its user may publish to that channel, and only such users make room by
    forgetting another: a read-only viewer can neither fill the hub nor hold
    it full. A channel forgotten while someone still reads it gives its
    history's memory back, and its readers stay on it: if it is written or
    asked for again while they read, it comes back under its name, its epoch
    kept and its ids going on from where they were.
    """

    def __init__(
        self, *, max_channels: int, history: int, history_bytes: int, budget: MemoryBudget | None = None
    ) -> None:
        self.max_channels = max_channels
        self.history = history
        self.history_bytes = history_bytes
        self.budget = budget  # the worker's memory budget, shared with the jobs (budget.py)
        self.deliver: Callable[[str, LogEvent], None] | None = None  # the store's listener (live delivery)
        # Ordered by last write, least recent first: a publish moves its channel to the end.
        self._logs: OrderedDict[str, EventLog] = OrderedDict()
        self._subscribers: dict[str, int] = {}
        self._pins: dict[str, int] = {}  # subscriptions that keep the channel (see Subscription.pins)
        self._by_user: dict[str, int] = {}  # subscriptions each user's open streams hold
        self._forgotten: weakref.WeakValueDictionary[str, EventLog] = weakref.WeakValueDictionary()
        for name in SYSTEM_CHANNELS:
            self.log(name)

    def set_deliver(self, deliver: Callable[[str, LogEvent], None] | None) -> None:
        """Live delivery for every channel, those that exist and those to come."""
        self.deliver = deliver
        for channel in (*self._logs.values(), *self._forgotten.values()):
            channel.deliver = deliver

    def log(self, name: str, keep: Collection[str] = (), *, make_room: bool = True) -> EventLog:
        """The channel's log, created on first use.

        Making room never forgets a channel named in ``keep`` (the other
        channels of the same request); with ``make_room`` false (a caller who
        may not publish to it), none is forgotten at all.
        """
        channel = self._logs.get(name)
        if channel is None:
            check_channel_name(name)
            if len(self._logs) >= self.max_channels and not (make_room and self._forget_idle(keep)):
                raise TooManyChannels()
            channel = self._forgotten.pop(name, None)
            if channel is not None:
                if self.budget is not None:
                    channel.attach(self.budget)
            else:
                channel = EventLog(
                    self.history_bytes, key=channel_key(name), epoch=new_epoch(), max_events=self.history,
                    terminal_kinds=frozenset(), pin_start=False, budget=self.budget, deliver=self.deliver,
                )
            self._logs[name] = channel
        return channel

    def restore(self, name: str, epoch: str, events: list[LogEvent], last_id: int) -> None:
        """Bring a channel back with the epoch and history it had (kept on disk): ids go on after ``last_id``.

        Replaces the channel if it exists with nothing in it (the system channels, made at start).
        """
        current = self._logs.get(name)
        if current is not None:
            if current.last_id:
                return
            current.detach()
            del self._logs[name]
        if len(self._logs) >= self.max_channels and not self._forget_idle():
            return
        channel = EventLog(
            self.history_bytes, key=channel_key(name), epoch=epoch, max_events=self.history,
            terminal_kinds=frozenset(), pin_start=False, budget=self.budget, deliver=self.deliver,
        )
        channel.restore(events, last_id)
        self._logs[name] = channel

    def peek(self, name: str) -> EventLog | None:
        """The channel's log if it exists (or is forgotten but still read); never creates one."""
        return self._logs.get(name) or self._forgotten.get(name)

    def _forget_idle(self, keep: Collection[str] = ()) -> bool:
        # Make room by forgetting one channel nobody keeps: the least recently written.
        for name in self._logs:
            if name not in SYSTEM_CHANNELS and name not in keep and not self._pins.get(name):
                channel = self._logs.pop(name)
                channel.detach()
                if self._subscribers.get(name):
                    channel.drop_history()
                    self._forgotten[name] = channel
                return True
        return False

    def append(self, name: str, kind: str, payload: Any, audience: str | None = None) -> LogEvent:
        """Append a message to a channel (made if need be); it becomes the most recently written."""
        event = self.log(name).append(kind, payload, audience=audience)
        self._logs.move_to_end(name)
        return event

    def subscribe(self, name: str, user: str = "", *, pins: bool = True, keep: Collection[str] = ()) -> Subscription:
        """Count a subscriber (until ``unsubscribe``), creating the channel if need be (TooManyChannels)."""
        channel = self.log(name, keep, make_room=pins)
        self._subscribers[name] = self._subscribers.get(name, 0) + 1
        if pins:
            self._pins[name] = self._pins.get(name, 0) + 1
        self._by_user[user] = self._by_user.get(user, 0) + 1
        # The subscription holds the log: a forgotten channel stays readable for as long as it is read.
        return Subscription(name, user, pins, channel)

    def unsubscribe(self, subscription: Subscription) -> None:
        """A subscriber counted by ``subscribe`` has gone."""
        _uncount(self._subscribers, subscription.name)
        if subscription.pins:
            _uncount(self._pins, subscription.name)
        _uncount(self._by_user, subscription.user)

    def subscriptions_of(self, user: str) -> int:
        """How many channel subscriptions the user's open streams hold."""
        return self._by_user.get(user, 0)

    def subscribers(self, name: str) -> int:
        """How many streams are subscribed to a channel now."""
        return self._subscribers.get(name, 0)

    def describe(self) -> list[dict[str, Any]]:
        """Every channel with its subscriber count and newest event id, by name."""
        return [
            {
                "name": name,
                "system": name in SYSTEM_CHANNELS,
                "subscribers": self._subscribers.get(name, 0),
                "last_id": Position(channel.epoch, channel.last_id).event_id,
                "url": f"/channels/{name}/events",
            }
            for name, channel in sorted(self._logs.items())
        ]


def _uncount(counts: dict[str, int], key: str) -> None:
    # Entries at zero go: the maps stay as small as what is subscribed now.
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
