"""Watching a job's pipes cooperatively (gevent), without a thread or a blocking read.

Output is read where readiness is noticed: in the io watcher's callback, run
by the hub. Waking the runner greenlet for every line instead costs two
greenlet switches and a stop and restart of the watchers per line, and a
line of output waited for all of that before it could leave the worker.
The runner itself sleeps until a pipe ends, it must wait for its viewer, or
reading failed.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent


class PipeWatch:
    """libev io watchers on a job's non-blocking pipes, each calling ``on_readable(fd, name)`` from the hub.

    Level-triggered: a pipe that still holds data is reported again at the
    next turn of the loop, after every other ready greenlet and watcher has
    had its turn, so a flooding command cannot starve the worker.
    """

    def __init__(self, on_readable: Callable[[int, str], None]) -> None:
        self._loop = gevent.get_hub().loop
        self._on_readable = on_readable
        self._watchers: dict[int, tuple[object, str]] = {}
        self.active = False

    def __bool__(self) -> bool:
        return bool(self._watchers)

    def register(self, fd: int, name: str) -> None:
        """Watch ``fd`` (a non-blocking pipe) for reading; reported only while started."""
        watcher = self._loop.io(fd, 1)
        self._watchers[fd] = (watcher, name)
        if self.active:
            watcher.start(self._on_readable, fd, name)

    def in_order(self, names: tuple[str, ...]) -> list[tuple[int, str]]:
        """The watched pipes as (fd, name), in the order of ``names``."""
        rank = {name: index for index, name in enumerate(names)}
        return sorted(((fd, name) for fd, (_, name) in self._watchers.items()), key=lambda item: rank[item[1]])

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` for good."""
        watcher, _ = self._watchers.pop(fd)
        watcher.stop()
        watcher.close()

    def start(self) -> None:
        """Report readable pipes from now on."""
        self.active = True
        for fd, (watcher, name) in self._watchers.items():
            watcher.start(self._on_readable, fd, name)

    def stop(self) -> None:
        """Report nothing until started again."""
        self.active = False
        for watcher, _ in self._watchers.values():
            watcher.stop()

    def close(self) -> None:
        """Stop and free every watcher, and let go of the callback (a closed watch reports nothing)."""
        for fd in list(self._watchers):
            self.unregister(fd)
        self.active = False
        # The callback is its owner's bound method: kept, the owner and this watch would be a reference
        # cycle, and whatever the owner holds (a job's whole log) would wait for the cyclic collector.
        self._on_readable = _closed


def _closed(fd: int, name: str) -> None:
    """What a closed watch would call."""
