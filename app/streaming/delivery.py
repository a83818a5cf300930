"""Direct delivery: an append writes its frame straight to the sockets of the streams that are caught up.

Without it, each append wakes every stream's greenlet, which reads the log and
writes through gunicorn: a greenlet switch, a read and a copy per viewer per
event. That is what made one message to 2,000 subscribers take 160 ms, and a
line of output wait for a switch before it left the worker.

A stream that has caught up with its log parks here instead, under the log's
key. ``DirectDelivery`` is the store's one listener (store/base.py): for each
appended event, it frames the event once and sends those same bytes to each
stream parked on that key, never blocking: a socket that cannot take the
whole chunk at once is detached with the unsent rest, and its stream writes
that rest itself (bounded by ``send_timeout``) and goes back to reading the
log. Parked streams cost no greenlet switch per event; their own greenlet
wakes only for a heartbeat, a hang-up, shutdown or detachment.

Only plain HTTP/1.1 GET responses are delivered directly (wire.py): gunicorn
frames them as chunked, so each direct write is one complete chunk, written
between two of gunicorn's own writes of the same response.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import gevent
from gevent.event import Event
from gevent.hub import Waiter

from ..store.base import JOB_PREFIX, TERMINAL_EVENTS, LogEvent
from .wire import ClientConnection, chunk, chunk_parts

_TIMED_OUT = object()
_JOIN_BELOW = 65536

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class Parked:
    """A stream caught up with its log: its ticket for waiting while appends are written to its socket.

    The stream's generator yields this ticket and the response body
    (tracker.TrackedStream) calls ``wait``, so the generator's frame is not on
    the parked greenlet's stack: that, and a bare Waiter rather than an Event
    with a Timeout, is memory every idle subscriber saves.
    """

    __slots__ = (
        "connection",
        "cursor",
        "delivery",
        "ended",
        "gone",
        "key",
        "leftover",
        "on_progress",
        "timed_out",
        "timeout",
        "visible",
        "waiter",
        "watcher",
        "woken",
    )

    def __init__(
        self,
        delivery: DirectDelivery,
        key: str,
        connection: ClientConnection,
        cursor: int,
        visible: Callable[[LogEvent], bool] | None,
        on_progress: Callable[[int], None] | None,
        timeout: float,
    ) -> None:
        self.delivery = delivery
        self.key = key  # the log it waits on
        self.connection = connection
        self.cursor = cursor  # offset of the last event this stream has delivered or skipped
        self.visible = visible
        self.on_progress = on_progress
        self.timeout = timeout
        self.leftover = b""  # the unsent end of a chunk that did not fit; the stream writes it
        self.gone = False  # the client hung up
        self.ended = False  # the terminal event was delivered
        self.timed_out = False
        self.woken = False
        self.waiter: Waiter | None = None
        self.watcher = None  # the io watcher on the client's socket while parked

    def wait(self) -> None:
        """Park until detached, hung up, shut down or timed out (then ``timed_out``)."""
        self.timed_out = not self.delivery.park(self)

    def readable(self) -> None:
        """The client's socket became readable while parked (called by the hub)."""
        # The client sends nothing on an SSE response: readable means it hung up
        # (or pipelined a request, which ends this response's direct delivery too).
        try:
            self.gone = not self.connection.sock.recv(1, _PEEK)
        except BlockingIOError:
            return
        except OSError:
            self.gone = True
        self.connection.pipelined = not self.gone
        if self.watcher is not None:
            self.watcher.stop()
        self.wake()

    def wake(self) -> None:
        """End the wait (from any greenlet; the switch itself runs in the hub)."""
        if self.waiter is not None and not self.woken:
            self.woken = True
            self.waiter.hub.loop.run_callback(self.waiter.switch, None)


class DirectDelivery:
    """Every parked stream of this worker, by log key; the store's listener (store/base.py, LogListener)."""

    def __init__(self, shutdown: Event) -> None:
        self.shutdown = shutdown
        # Ordered: first parked, first served. A key is here only while streams are parked on it.
        self._parked: dict[str, dict[Parked, None]] = {}
        shutdown.rawlink(self._wake_all)

    def deliver(self, key: str, event: LogEvent) -> None:
        """Send ``event`` to every stream parked on ``key`` that may see it; detach those that cannot take it now."""
        parked = self._parked.get(key)
        if not parked:
            return
        frame = event.frame
        # Chunked once, for every subscriber. A small frame (a message, a line) is copied into
        # one chunk and sent with send(), cheaper per subscriber than sendmsg(); a large one (a
        # flood of output) goes as three buffers and is never copied.
        if len(frame) < _JOIN_BELOW:
            joined, parts = chunk(frame), None
            size = len(joined)
        else:
            joined, parts = None, chunk_parts(frame)
            size = sum(map(len, parts))
        terminal = event.kind in TERMINAL_EVENTS and key.startswith(JOB_PREFIX)
        event_id = event.id
        for stream in list(parked):
            if event_id <= stream.cursor:
                continue  # sent already: a stream that read from a shared store ahead of this worker's mirror
            if stream.visible is not None and not stream.visible(event):
                stream.cursor = event.id
                continue
            try:
                sock = stream.connection.sock
                sent = sock.send(joined) if joined is not None else sock.sendmsg(parts)
            except BlockingIOError:
                sent = 0
            except OSError:
                stream.gone = True
                self._detach(parked, stream)
                continue
            stream.cursor = event.id
            stream.connection.sent += sent
            if sent < size:
                stream.leftover = (joined if joined is not None else b"".join(parts))[sent:]
                self._detach(parked, stream)
                continue
            if stream.on_progress is not None:
                stream.on_progress(event.id)
            if terminal:
                stream.ended = True
                self._detach(parked, stream)

    def reset(self, key: str) -> None:
        """The log ``key`` has a new epoch: every stream parked on it reads again (and is told ``reset``)."""
        parked = self._parked.get(key)
        for stream in list(parked or ()):
            self._detach(parked, stream)

    @staticmethod
    def _detach(parked: dict[Parked, None], stream: Parked) -> None:
        parked.pop(stream, None)
        stream.wake()

    def park(self, stream: Parked) -> bool:
        """Hold ``stream`` until it is detached, its client hangs up, shutdown, or its timeout (False)."""
        if self.shutdown.is_set():
            return True
        hub = gevent.get_hub()
        watcher = stream.watcher = hub.loop.io(stream.connection.sock.fileno(), 1)
        timer = hub.loop.timer(stream.timeout)
        waiter = stream.waiter = Waiter(hub)
        stream.woken = False
        parked = self._parked.get(stream.key)
        if parked is None:
            parked = self._parked[stream.key] = {}
        parked[stream] = None
        watcher.start(stream.readable)
        timer.start(waiter.switch, _TIMED_OUT)
        try:
            # A bare Waiter and a loop timer: an Event plus a Timeout cost every parked stream memory.
            return waiter.get() is not _TIMED_OUT
        finally:
            stream.waiter = stream.watcher = None
            timer.stop()
            timer.close()
            watcher.stop()
            watcher.close()
            parked.pop(stream, None)
            if not parked and self._parked.get(stream.key) is parked:
                del self._parked[stream.key]

    def parked_count(self) -> int:
        """How many streams are parked now (all keys)."""
        return sum(map(len, self._parked.values()))

    def _wake_all(self, _shutdown: Event) -> None:
        for parked in list(self._parked.values()):
            for stream in list(parked):
                self._detach(parked, stream)
