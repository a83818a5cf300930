"""THE SSE response loop: one loop for every event stream, over N sources (sse-starlette's EventSourceResponse).

A single job or channel is N = 1; ``GET /events`` is N >= 1 with composite
ids. The loop owns, for every stream:

- the first frame (``retry:`` and a ``: connected`` comment), sent at once so
  headers reach the client before the command prints anything;
- replay after each source's position, then live: read, yield, wait;
- ``gap`` (the log no longer holds what came after the position) and
  ``reset`` (the position was of another epoch: a channel whose history started
  again, after a restart, say) events;
- visibility filters (the ``jobs`` channel shows each user only their jobs);
- the heartbeat, a ``: ping`` comment after ``heartbeat_interval`` without
  events, so proxies keep the stream open and a departed client shows up as a
  failed write;
- hang-up detection: a parked stream's own socket watch (delivery.py), or a
  watcher greenlet for streams that cannot park (wire.py);
- the send timeout (tracker.StreamTracker drops a stream stuck on one write);
- graceful shutdown: a job's final events get ``kill_grace`` + 1 s to arrive,
  then a jittered ``retry:`` sends clients to a fresh worker to resume.

N = 1 keeps each log's own event ids (a job's ``120``, a channel's
``k3x9ab-7``) and direct delivery: once caught up, the stream parks
(delivery.Parked) and appends are written straight to its socket. N > 1 (or
any ``GET /events``) re-tags each event with a composite id (multiplex.py),
built from the event's stored JSON, and waits on all its sources at once.

The loop reads through the store's interface only (store/base.py): it never
knows which store it has.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass

from gevent.event import Event

from .. import metrics
from ..config import Settings
from ..store.base import LogEvent, Pacing, Position, Store, StoreUnavailable, UnknownLog, is_job_key
from .delivery import DirectDelivery, Parked
from .multiplex import format_composite, missed_field, retag, retag_gap, retag_reset, source_id_json
from .sse import HEARTBEAT, encode_comment, encode_json_event, encode_retry
from .tracker import StreamTracker, TrackedStream
from .wire import Wire, send_rest, watch_for_disconnect

RESET_DATA = {"missed": "unknown"}


@dataclass(slots=True)
class Source:
    """One log a stream follows, and how far the stream has got in it."""

    key: str  # job:<id> or channel:<name>
    cursor: Position  # of the last event sent (or skipped as not visible)
    visible: Callable[[LogEvent], bool] | None = None  # which events this client may see; None: all
    finished: bool = False  # a job's terminal event was sent, or the log is no longer kept


def _also(first: Callable[[int], None] | None, second: Callable[[int], None]) -> Callable[[int], None]:
    """One progress callback that calls both."""
    if first is None:
        return second

    def both(offset: int) -> None:
        first(offset)
        second(offset)

    return both


def shutdown_farewell(settings: Settings) -> bytes:
    """The last frame of a stream cut by a graceful shutdown: come back after a jittered delay."""
    delay = settings.retry_ms + random.randint(0, settings.shutdown_retry_jitter_ms)
    return encode_retry(delay) + encode_comment("server restarting; reconnect to resume")


def reset_frame(position: Position) -> bytes:
    """A single stream's ``reset``: its id is where the replay of the current history begins."""
    return encode_json_event(RESET_DATA, event="reset", event_id=position.event_id)


class EventStreams:
    """Opens this worker's event streams: the loop, counted and timed by the tracker."""

    def __init__(
        self, store: Store, delivery: DirectDelivery, tracker: StreamTracker, settings: Settings, shutdown: Event
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.tracker = tracker
        self.settings = settings
        self.shutdown = shutdown

    def open(
        self,
        sources: list[Source],
        wire: Wire,
        label: str,
        *,
        kind: str = "job",
        multiplexed: bool = False,
        on_progress: Callable[[int], None] | None = None,
        on_close: Iterable[Callable[[], None]] = (),
    ) -> TrackedStream:
        """The response body for ``sources``; ``on_close`` runs when the response ends, however it ends.

        ``on_progress(offset)``: called as a single source's events are sent (GET /run's flow control).
        ``kind``: what the stream is, for the metrics and the access log (run, job, channel, events).
        """
        frames = self._loop(sources, wire, multiplexed or len(sources) > 1, on_progress)
        return self.tracker.guard(frames, label, on_close, kind=kind, connection=wire.connection)

    def _loop(
        self, sources: list[Source], wire: Wire, multiplexed: bool, on_progress: Callable[[int], None] | None
    ) -> Generator[bytes | Parked, None, str]:
        """The stream's frames; returns why it ended: finished (every source), client_left or shutdown."""
        settings, shutdown = self.settings, self.shutdown
        pending = [encode_retry(settings.retry_ms) + encode_comment("connected")]
        connection = None if multiplexed else wire.connection  # direct delivery: a single source only
        drain_until: float | None = None
        gone: Event | None = None  # set when the client hangs up, for streams that cannot park
        watcher = None
        paced: list[tuple[Source, Pacing]] = []
        try:
            paced = self._paced(sources)
            if paced and not multiplexed:
                on_progress = _also(on_progress, paced[0][1].read_through)
            while True:
                try:
                    progressed = self._read(sources, pending, multiplexed)
                except StoreUnavailable:
                    # A shared store gone (Redis down): the client comes back after retry_ms and resumes.
                    yield b"".join(pending) + encode_retry(settings.retry_ms) + encode_comment(
                        "the store is unavailable; reconnect to resume")
                    return
                if pending:
                    yield b"".join(pending)
                    pending = []
                    if on_progress is not None:
                        on_progress(sources[0].cursor.offset)
                    elif paced:
                        for source, pacing in paced:
                            pacing.read_through(source.cursor.offset)
                if all(source.finished for source in sources):
                    break
                if progressed:
                    continue  # more may be waiting beyond the read limit
                if shutdown.is_set():
                    # Jobs are being stopped: give their final events a moment to arrive; channels never end.
                    jobs = {s.key: s.cursor for s in sources if not s.finished and is_job_key(s.key)}
                    if drain_until is None:
                        drain_until = time.monotonic() + settings.kill_grace + 1.0
                    remaining = drain_until - time.monotonic()
                    if not jobs or remaining <= 0:
                        break
                    self.store.wait_any(jobs, remaining, () if gone is None else (gone,))
                elif connection is not None and not connection.pipelined:
                    source = sources[0]
                    parked = Parked(
                        self.delivery, source.key, connection, source.cursor.offset, source.visible, on_progress,
                        settings.heartbeat_interval,
                    )
                    yield parked  # TrackedStream waits on it, outside this generator
                    source.cursor = Position(source.cursor.epoch, parked.cursor)
                    if parked.leftover:
                        send_rest(connection, parked.leftover, settings.send_timeout)
                        if on_progress is not None:
                            on_progress(parked.cursor)
                    if parked.gone:
                        return "client_left"
                    if parked.ended:
                        return "finished"
                    if parked.timed_out and not shutdown.is_set():
                        yield HEARTBEAT
                    continue
                else:
                    if gone is None:
                        gone = Event()
                        watcher = watch_for_disconnect(wire.sock, gone.set)
                    afters = {s.key: s.cursor for s in sources if not s.finished}
                    if not self.store.wait_any(afters, settings.heartbeat_interval, (shutdown, gone)):
                        yield HEARTBEAT
                if gone is not None and gone.is_set():
                    return "client_left"
            if shutdown.is_set():
                yield shutdown_farewell(settings)
                return "shutdown"
            return "finished"
        finally:
            if watcher is not None:
                watcher.kill(block=False)
            for _, pacing in paced:
                pacing.close()

    def _paced(self, sources: list[Source]) -> list[tuple[Source, Pacing]]:
        """The job sources whose jobs wait for this stream (run by another worker: Store.pace)."""
        found = []
        for source in sources:
            if is_job_key(source.key):
                pacing = self.store.pace(source.key, source.cursor.offset, always=False)
                if pacing is not None:
                    found.append((source, pacing))
        return found

    def _read(self, sources: list[Source], pending: list[bytes], multiplexed: bool) -> bool:
        """Read every unfinished source once, adding its frames to ``pending``; whether any had events."""
        progressed = False
        for source in sources:
            if source.finished:
                continue
            try:
                read = self.store.read(source.key, source.cursor, raw=False)  # frames only
            except UnknownLog:
                source.finished = True  # a job forgotten while read: nothing more will come
                continue
            events = read.events
            if read.missed and is_job_key(source.key):
                metrics.gap_reported(read.missed)  # a job's missed part is in bytes (a channel's in messages)
            if read.reset:
                # The replay starts right after the returned position: the event before the first one read.
                source.cursor = Position(read.epoch, events[0].id - 1 if events else read.last_id)
            elif source.cursor.epoch != read.epoch:
                # Read from the start (the one position in every epoch): from now on it is in the log's epoch.
                source.cursor = Position(read.epoch, source.cursor.offset)
            if multiplexed:
                self._retagged(source, read.epoch, events, read.missed, read.reset, pending, sources)
            else:
                self._framed(source, events, read.missed, read.gap_at, read.reset, pending)
                if events:
                    source.cursor = Position(read.epoch, events[-1].id)
            if read.finished:
                source.finished = True
            progressed = progressed or bool(events)
        return progressed

    @staticmethod
    def _framed(
        source: Source, events: list[LogEvent], missed: int, gap_at: int, reset: bool, pending: list[bytes]
    ) -> None:
        """A single source's frames, as stored (each event's own id)."""
        if reset:
            pending.append(reset_frame(source.cursor))
        visible = source.visible
        frames = [event.frame for event in events if visible is None or visible(event)]
        if missed:
            # The gap sits where the dropped events were: after a job's pinned start event, if it was read
            # (only job logs pin one, and they are never filtered, so the index holds among the frames).
            frames.insert(gap_at, encode_json_event({missed_field(source.key): missed}, event="gap"))
        pending.extend(frames)

    @staticmethod
    def _retagged(
        source: Source, epoch: str, events: list[LogEvent], missed: int, reset: bool, pending: list[bytes],
        sources: list[Source],
    ) -> None:
        """A multiplexed source's frames: each with the composite id of every source's position after it."""
        key = source.key
        if reset:
            pending.append(retag_reset(key, format_composite((s.key, s.cursor) for s in sources)))
        if missed:
            pending.append(retag_gap(key, missed, format_composite((s.key, s.cursor) for s in sources)))
        visible = source.visible
        for event in events:
            source.cursor = position = Position(epoch, event.id)
            if visible is None or visible(event):
                composite = format_composite((s.key, s.cursor) for s in sources)
                pending.append(retag(event, key, source_id_json(key, position), composite))
