"""The worker's one reader: a blocking ``XREAD`` over every stream its clients follow.

However many streams and subscribers a worker has, it holds one connection
for this (plus the store's small pool). The key set changes as clients come
and go: a new key is added by writing to this worker's wake stream, which is
always in the set, so the blocked ``XREAD`` returns and is sent again with the
new key. The resets stream is always in the set too: a channel given a new
epoch (Redis flushed or restarted without persistence) is announced there.

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
        resets_stream: str,
        on_entries: Callable[[str, list], None],
        on_reset: Callable[[str, str], None],
        on_reconnect: Callable[[], None],
        wake: Callable[[], None],
    ) -> None:
        self.client = client  # its own connection: socket_timeout above BLOCK_MS
        self.wake_stream = wake_stream
        self.resets_stream = resets_stream
        self.on_entries = on_entries
        self.on_reset = on_reset
        self.on_reconnect = on_reconnect
        self._wake = wake  # writes to the wake stream (through the store's pool)
        self._positions: dict[str, str] = {}  # stream name -> id of the last entry read
        self._wake_at = "0-0"
        self._resets_at = "$"
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
            streams = {self.wake_stream: self._wake_at, self.resets_stream: self._resets_at, **self._positions}
            try:
                if self._resets_at == "$":
                    newest = self.client.xrevrange(self.resets_stream, count=1)
                    self._resets_at = newest[0][0].decode() if newest else "0-0"
                    streams[self.resets_stream] = self._resets_at
                reply = self.client.xread(streams, count=COUNT, block=BLOCK_MS)
            except Exception as exc:
                if not down:
                    log.warning("the Redis reader lost its connection: %s", exc)
                down = True
                self.healthy = False
                self.error = str(exc) or exc.__class__.__name__
                gevent.sleep(0.5)
                continue
            if down:
                down = False
                self.healthy = True
                self.error = ""
                self.on_reconnect()
            for name, entries in reply or ():
                self._handle(name.decode(), entries)

    def _handle(self, name: str, entries: list) -> None:
        last = entries[-1][0].decode()
        if name == self.wake_stream:
            self._wake_at = last
        elif name == self.resets_stream:
            self._resets_at = last
            for _, fields in entries:
                self.on_reset(fields[b"key"].decode(), fields[b"epoch"].decode())
        elif name in self._positions:
            self._positions[name] = last
            self.on_entries(name, entries)
