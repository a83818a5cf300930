"""Broadcast channels: a bounded event log per channel, plus the system channels.

Publishing encodes a message once; every subscriber writes the same bytes.
Subscribers read at their own pace from the shared log, so a slow one never
delays the others; one that falls behind the history is told how many
messages it missed.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import gevent

from ..policy.messages import SYSTEM_CHANNELS, check_channel_name
from .budget import MemoryBudget
from .eventlog import EventLog

log = logging.getLogger(__name__)


class TooManyChannels(Exception):
    """The limit of channels is reached."""


@dataclass(frozen=True, eq=False, slots=True)
class Subscription:
    """One stream's subscription to one channel, until ``ChannelHub.unsubscribe``."""

    name: str
    user: str
    pins: bool  # whether it keeps the channel from being forgotten (only those who may publish to it)
    log: EventLog


class ChannelHub:
    """All channels of this worker.

    A subscription keeps its channel from being forgotten to make room only if
    its user may publish to that channel, and only such users make room by
    forgetting another: a read-only viewer can neither fill the hub nor hold
    it full. A channel forgotten while someone still reads it gives its
    history's memory back, and its readers stay on it: if it is written or
    asked for again while they read, it comes back under its name, its ids
    going on from where they were.
    """

    def __init__(
        self, *, max_channels: int, history: int, history_bytes: int, budget: MemoryBudget | None = None
    ) -> None:
        self.max_channels = max_channels
        self.history = history
        self.history_bytes = history_bytes
        self.budget = budget  # the worker's memory budget, shared with the jobs (budget.py)
        # Ordered by last write, least recent first: a publish moves its channel to the end.
        self._logs: OrderedDict[str, EventLog] = OrderedDict()
        self._subscribers: dict[str, int] = {}
        self._pins: dict[str, int] = {}  # subscriptions that keep the channel (see Subscription.pins)
        self._by_user: dict[str, int] = {}  # subscriptions each user's open streams hold
        self._forgotten: weakref.WeakValueDictionary[str, EventLog] = weakref.WeakValueDictionary()
        for name in SYSTEM_CHANNELS:
            self.log(name)

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
                    self.history_bytes, max_events=self.history, terminal_kinds=frozenset(), pin_start=False,
                    budget=self.budget,
                )
            self._logs[name] = channel
        return channel

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

    def publish(self, name: str, event: str, data: Any, user: str | None, audience: str | None = None) -> int:
        """Append a message to a channel; returns its id."""
        payload = {"data": data, "user": user, "time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        message_id = self.log(name).append(event, payload, audience=audience).id
        self._logs.move_to_end(name)
        return message_id

    @contextmanager
    def subscribed(self, name: str, user: str = "", *, pins: bool = True) -> Iterator[EventLog]:
        """Count a subscriber for as long as the block runs."""
        subscription = self.subscribe(name, user, pins=pins)
        try:
            yield subscription.log
        finally:
            self.unsubscribe(subscription)

    def subscribe(self, name: str, user: str = "", *, pins: bool = True, keep: Collection[str] = ()) -> Subscription:
        """Count a subscriber (until ``unsubscribe``), creating the channel if need be (TooManyChannels)."""
        channel = self.log(name, keep, make_room=pins)
        self._subscribers[name] = self._subscribers.get(name, 0) + 1
        if pins:
            self._pins[name] = self._pins.get(name, 0) + 1
        self._by_user[user] = self._by_user.get(user, 0) + 1
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
        """Every channel with its subscriber count and history, by name."""
        return [
            {
                "name": name,
                "system": name in SYSTEM_CHANNELS,
                "subscribers": self._subscribers.get(name, 0),
                "last_id": channel.last_id,
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


def _memory() -> dict[str, int]:
    info: dict[str, int] = {}
    try:
        with open(f"/proc/{os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    info["worker_rss_bytes"] = int(line.split()[1]) * 1024
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, value = line.split(":", 1)
                if key in ("MemTotal", "MemAvailable"):
                    info[f"{key[3:].lower()}_bytes"] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return info


def stats_snapshot(running_jobs: int, open_streams: int) -> dict[str, Any]:
    """What the ``stats`` channel carries."""
    return {
        "worker_pid": os.getpid(),
        "running_jobs": running_jobs,
        "open_streams": open_streams,
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "memory": _memory(),
    }


def run_stats_publisher(hub: ChannelHub, interval: float, snapshot: Callable[[], dict[str, Any]]) -> gevent.Greenlet:
    """Publish a stats snapshot every ``interval`` seconds while anyone listens."""

    def loop() -> None:
        while True:
            started = time.monotonic()
            if hub.subscribers("stats"):
                try:
                    hub.publish("stats", "stats", snapshot(), user=None)
                except Exception:
                    log.exception("stats publisher failed")
            gevent.sleep(max(0.0, interval - (time.monotonic() - started)))

    return gevent.spawn(loop)
