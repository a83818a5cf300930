"""Waiting for a job's pipes to become readable, cooperatively (gevent), without a thread or a blocking read."""

from __future__ import annotations

import gevent
from gevent.hub import Waiter


class ReadablePipes:
    """Waits until any of a job's pipes is readable: a gevent-cooperative selector cut to what the runner needs.

    One libev io watcher per pipe whose callback switches straight back to the
    runner. gevent's GeventSelector sets an Event instead, whose waiter only
    runs at the next turn of the loop: a delay on every line of output.
    """

    def __init__(self) -> None:
        self._loop = gevent.get_hub().loop
        self._watchers: dict[int, tuple[object, str]] = {}

    def __bool__(self) -> bool:
        return bool(self._watchers)

    def register(self, fd: int, name: str) -> None:
        """Watch ``fd`` (a non-blocking pipe) for reading."""
        self._watchers[fd] = (self._loop.io(fd, 1), name)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``."""
        watcher, _ = self._watchers.pop(fd)
        watcher.stop()
        watcher.close()

    def wait(self) -> list[tuple[int, str]]:
        """Block this greenlet until at least one pipe is readable; the readable ones, with their names."""
        waiter = Waiter()
        ready: list[tuple[int, str]] = []

        def readable(fd: int, name: str) -> None:
            ready.append((fd, name))
            if len(ready) == 1:
                waiter.switch(None)

        for fd, (watcher, name) in self._watchers.items():
            watcher.start(readable, fd, name)
        try:
            waiter.get()
        finally:
            for watcher, _ in self._watchers.values():
                watcher.stop()
        return ready

    def close(self) -> None:
        """Stop and free every watcher."""
        for fd in list(self._watchers):
            self.unregister(fd)
