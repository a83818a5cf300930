"""The worker's one reader: a blocking ``XREAD`` over every stream its clients follow.

However many streams and subscribers a worker has, it holds one connection
for this (plus the store's small pool). The key set changes as clients come
and go: a new key is added by writing to this worker's wake stream, which is
always in the set, so the blocked ``XREAD`` returns and is sent again with the
new key. Two more streams are always in the set: the resets stream, where a
channel given a new epoch (Redis flushed or restarted without persistence) is
announced, and this host's control stream, where other workers ask for this
host's jobs to be stopped.

Each entry read is handed to ``on_entries``, which keeps it in the key's local
mirror; the mirror delivers it to this worker's parked streams through the
store's listener, framed once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent

log = logging.getLogger(__name__)

BLOCK_MS = 10_000  # one XREAD waits this long at most; the socket timeout is set above it
COUNT = 512  # entries per stream per XREAD


class StreamReader:
    """Follows streams by name from given positions; see the module docstring."""

    def __init__(
        self,
        client,
        wake_stream: str,
        fixed: dict[str, Callable[[list], None]],
        on_entries: Callable[[str, list], None],
        on_reconnect: Callable[[], None],
        on_down: Callable[[], None],
        wake: Callable[[], None],
    ) -> None:
        self.client = client  # its own connection: socket_timeout above BLOCK_MS
        self.wake_stream = wake_stream
        self.fixed = {wake_stream: lambda entries: None, **fixed}  # always read: name -> what to do with entries
        self.on_entries = on_entries
        self.on_reconnect = on_reconnect
        self.on_down = on_down
        self._wake = wake  # writes to the wake stream (through the store's pool)
        self._positions: dict[str, str] = {}  # stream name -> id of the last entry read
        self._fixed_at: dict[str, str] = {}  # the fixed streams' positions: from their newest entry at start
        self.healthy = False
        self.error = "not connected yet"
        self.greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        """Run in a greenlet of its own."""
        self.greenlet = gevent.spawn(self.run)

    def follow(self, stream: str, after: int) -> None:
        """Read ``stream`` from after the offset ``after`` on (the blocked XREAD is re-armed at once)."""
        self._positions[stream] = f"{after}-0"
        try:
            self._wake()
        except Exception as exc:  # the reader sees the outage itself
            log.debug("could not wake the reader: %s", exc)

    def unfollow(self, stream: str) -> None:
        """Stop reading ``stream`` (from the next XREAD on)."""
        self._positions.pop(stream, None)

    def following(self) -> int:
        """How many streams are followed now."""
        return len(self._positions)

    def run(self) -> None:
        """Read until the worker ends; an outage is waited out, then every follower is told to read again."""
        down = True
        while True:
            try:
                if down:
                    self.client.ping()
                    for name in self.fixed:
                        if name not in self._fixed_at:
                            newest = self.client.xrevrange(name, count=1)
                            self._fixed_at[name] = newest[0][0].decode() if newest else "0-0"
                    down = False
                    self.healthy = True
                    self.error = ""
                    self.on_reconnect()
                streams = {**self._fixed_at, **self._positions}
                reply = self.client.xread(streams, count=COUNT, block=BLOCK_MS)
            except Exception as exc:
                if not down:
                    log.warning("the Redis reader lost its connection: %s", exc)
                    self.on_down()
                down = True
                self.healthy = False
                self.error = str(exc) or exc.__class__.__name__
                gevent.sleep(0.5)
                continue
            for name, entries in reply or ():
                self._handle(name.decode(), entries)

    def _handle(self, name: str, entries: list) -> None:
        last = entries[-1][0].decode()
        if name in self.fixed:
            self._fixed_at[name] = last
            try:
                self.fixed[name](entries)
            except Exception:
                log.exception("handling %s failed", name)
        elif name in self._positions:
            self._positions[name] = last
            self.on_entries(name, entries)
