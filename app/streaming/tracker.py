"""Every stream of this worker, counted and timed: the response bodies gunicorn iterates.

``StreamTracker`` counts open streams (admission's ``max_streams`` reads the
count) and drops a stream whose client stopped reading for ``send_timeout``.
``TrackedStream`` is the body itself: it passes a stream's frames through,
and waits on a parked stream's ticket (delivery.Parked) outside the stream's
generator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

import gevent

from .. import metrics
from .delivery import Parked
from .wire import ClientConnection, SlowClient

log = logging.getLogger(__name__)


class TrackedStream:
    """A response body (WSGI iterable) that StreamTracker times; gunicorn iterates it directly.

    A class rather than a generator, and handed to gunicorn without werkzeug's
    wrappers (direct_passthrough): each level of generators between gunicorn
    and the stream's wait is C stack that every parked greenlet keeps saved,
    which was the largest part of an idle subscriber's memory.
    """

    __slots__ = ("_connection", "_counted", "_frames", "_greenlet", "_label", "_on_close", "_tracker", "end", "kind")

    def __init__(
        self, tracker: StreamTracker, frames: Iterator[bytes], label: str, on_close: tuple[Callable[[], None], ...],
        kind: str = "job", connection: ClientConnection | None = None,
    ) -> None:
        self._tracker = tracker
        self._frames = frames
        self._label = label
        self._on_close = on_close
        self._greenlet: gevent.Greenlet | None = None
        # Counted from here, not from the first write: admission (max_streams) must see every
        # stream a view has handed out, including those gunicorn has not started yet.
        self._counted = True
        tracker.count += 1
        self.kind = kind  # run, job, channel or events (metrics, logs)
        self.end: str | None = None  # how it ended, once it has: its loop's reason, or slow_client
        self._connection = connection  # direct delivery's, whose bytes gunicorn does not count
        metrics.stream_opened(kind)

    def __iter__(self) -> TrackedStream:
        return self

    def __next__(self) -> bytes:
        tracker = self._tracker
        if self._greenlet is None:
            self._greenlet = gevent.getcurrent()
            tracker._opened(self._greenlet, self)
        else:
            tracker._writing[self._greenlet] = None  # gunicorn asks for more: the last write is done
        try:
            chunk = next(self._frames)
            while type(chunk) is Parked:
                # The stream has caught up: wait here, with its generator suspended rather than on the stack.
                chunk.wait()
                chunk = next(self._frames)
        except StopIteration as stop:
            self.end = stop.value or "finished"  # the loop returns why it ended
            raise
        except SlowClient:
            self.end = "slow_client"
            raise
        tracker._writing[self._greenlet] = time.monotonic()
        return chunk

    @property
    def direct_bytes(self) -> int:
        """Bytes direct delivery wrote to this stream's client (gunicorn counts only those it wrote)."""
        return self._connection.sent if self._connection is not None else 0

    def close(self) -> None:
        """Called by gunicorn when the response ends, however it ends (even if it never started)."""
        self._uncount()
        if self._greenlet is not None:
            self._tracker._closed(self._greenlet)
        try:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()
        finally:
            for callback in self._on_close:
                callback()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._tracker.count -= 1
            metrics.stream_closed(self.kind)

    def __del__(self) -> None:
        # A response dropped before gunicorn got it (an error after the view) is never closed:
        # its place must not stay taken for the life of the worker.
        self._uncount()


class StreamTracker:
    """Counts open streams and drops any stuck writing to a client that stopped reading.

    A stalled client never delays others (each stream writes from its own
    greenlet), but its greenlet and socket would wait forever; one sweeper
    for all streams ends those after ``send_timeout`` and logs it.
    """

    def __init__(self, send_timeout: float) -> None:
        self.send_timeout = send_timeout
        self.count = 0  # streams handed out and not yet closed (TrackedStream keeps it)
        self._writing: dict[gevent.Greenlet, float | None] = {}
        self._streams: dict[gevent.Greenlet, TrackedStream] = {}
        self._sweeper: gevent.Greenlet | None = None

    @property
    def open_streams(self) -> int:
        """How many streams are open on this worker (started or about to start)."""
        return self.count

    def guard(
        self, frames: Iterator[bytes], label: str, on_close: Iterable[Callable[[], None]] = (), *, kind: str = "job",
        connection: ClientConnection | None = None,
    ) -> TrackedStream:
        """Pass ``frames`` through, timing each write; ``on_close`` runs when the server closes the response.

        ``kind``: what the stream is, for the metrics and logs (run, job, channel, events); ``connection``: the
        one direct delivery writes to, if any.
        """
        self._ensure_sweeper()
        return TrackedStream(self, frames, label, tuple(on_close), kind, connection)

    def _opened(self, greenlet: gevent.Greenlet, stream: TrackedStream) -> None:
        self._writing[greenlet] = None
        self._streams[greenlet] = stream
        self._ensure_sweeper()

    def _closed(self, greenlet: gevent.Greenlet) -> None:
        self._writing.pop(greenlet, None)
        self._streams.pop(greenlet, None)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.dead:
            self._sweeper = gevent.spawn(self._sweep)

    def _sweep(self) -> None:
        while self._writing:
            gevent.sleep(min(1.0, self.send_timeout / 2))
            now = time.monotonic()
            for greenlet, since in list(self._writing.items()):
                if since is not None and now - since > self.send_timeout and isinstance(greenlet, gevent.Greenlet):
                    stream = self._streams.get(greenlet)
                    log.warning(
                        "dropping stream %s: its client stopped reading (%.0f s on one write)",
                        stream._label if stream is not None else "?", now - since,
                    )
                    if stream is not None:
                        stream.end = "slow_client"
                    self._writing.pop(greenlet, None)
                    metrics.slow_subscriber_dropped()
                    greenlet.kill(block=False)
