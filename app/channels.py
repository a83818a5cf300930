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
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import gevent

from .budget import MemoryBudget
from .eventlog import EventLog
from .messages import SYSTEM_CHANNELS, check_channel_name

log = logging.getLogger(__name__)


class TooManyChannels(Exception):
    """The limit of channels is reached."""


class ChannelHub:
    """All channels of this worker."""

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
        for name in SYSTEM_CHANNELS:
            self.log(name)

    def log(self, name: str, keep: Collection[str] = ()) -> EventLog:
        """The channel's log, created on first use.

        Making room never forgets a channel named in ``keep`` (the other
        channels of the same request).
        """
        channel = self._logs.get(name)
        if channel is None:
            check_channel_name(name)
            if len(self._logs) >= self.max_channels and not self._forget_idle(keep):
                raise TooManyChannels()
            channel = EventLog(
                self.history_bytes, max_events=self.history, terminal_kinds=frozenset(), pin_start=False,
                budget=self.budget,
            )
            self._logs[name] = channel
        return channel

    def peek(self, name: str) -> EventLog | None:
        """The channel's log if it exists; never creates one."""
        return self._logs.get(name)

    def _forget_idle(self, keep: Collection[str] = ()) -> bool:
        # Make room by dropping one channel nobody listens to: the least recently written.
        for name in self._logs:
            if name not in SYSTEM_CHANNELS and name not in keep and not self._subscribers.get(name):
                self._logs.pop(name).detach()
                return True
        return False

    def publish(self, name: str, event: str, data: Any, user: str | None, audience: str | None = None) -> int:
        """Append a message to a channel; returns its id."""
        payload = {"data": data, "user": user, "time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        message_id = self.log(name).append(event, payload, audience=audience).id
        self._logs.move_to_end(name)
        return message_id

    @contextmanager
    def subscribed(self, name: str) -> Iterator[EventLog]:
        """Count a subscriber for as long as the block runs."""
        channel = self.subscribe(name)
        try:
            yield channel
        finally:
            self.unsubscribe(name)

    def subscribe(self, name: str) -> EventLog:
        """Count a subscriber (until ``unsubscribe``); the channel's log."""
        channel = self.log(name)
        self._subscribers[name] = self._subscribers.get(name, 0) + 1
        return channel

    def unsubscribe(self, name: str) -> None:
        """A subscriber counted by ``subscribe`` has gone."""
        self._subscribers[name] -= 1

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
