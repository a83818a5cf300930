"""Stream generators: event log -> bytes for the socket.

Each generator replays from a cursor, then follows the log live. The first
frame (``retry:`` plus a comment) goes out at once so headers reach the
client before the command prints anything. While idle, a heartbeat comment
every ``heartbeat_interval`` keeps proxies open and makes a departed client
show up as a failed write. On graceful shutdown a stream ends with a
jittered ``retry:`` so clients come back to a fresh worker and resume.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

import gevent
from gevent.event import Event
from gevent.socket import wait_read

from ..config import Settings
from ..store.eventlog import EventLog, LogEvent, LogRead
from ..store.jobs import JobStore, UnknownJob
from .delivery import ClientConnection, Parked, delivery_for, send_rest
from .multiplex import format_composite, retag, retag_gap
from .sse import HEARTBEAT, encode_comment, encode_json_event, encode_retry

log = logging.getLogger(__name__)


class LogSource(Protocol):
    """What a stream reads from: an EventLog, or a job in a JobStore."""

    def read_after(self, cursor: int) -> LogRead: ...

    def wait(self, cursor: int, timeout: float, wake: Iterable[Event] = ()) -> bool: ...


class JobSource:
    """One job of a JobStore, read like an EventLog."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id

    def read_after(self, cursor: int) -> LogRead:
        """Events after the cursor (UnknownJob once the job is forgotten)."""
        return self.store.read_after(self.job_id, cursor)

    def wait(self, cursor: int, timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait for an event after the cursor."""
        return self.store.wait(self.job_id, cursor, timeout, wake)

    def event_log(self) -> EventLog | None:
        """The job's EventLog, if the store keeps it in this process."""
        try:
            return self.store.log(self.job_id)
        except (UnknownJob, AttributeError):
            return None


def _event_log(source: LogSource) -> EventLog | None:
    if isinstance(source, EventLog):
        return source
    find = getattr(source, "event_log", None)
    return find() if find is not None else None


def job_event_stream(
    store: JobStore,
    job_id: str,
    cursor: int,
    settings: Settings,
    shutdown: Event,
    on_progress: Callable[[int], None] | None = None,
    connection: ClientConnection | None = None,
) -> Iterator[bytes]:
    """Replay a job's events after ``cursor``, then follow them live until the terminal event."""
    # On shutdown, jobs are being stopped: give their final events a moment to arrive.
    return event_stream(
        JobSource(store, job_id), cursor, settings, shutdown, on_progress=on_progress, gap_field="missed_bytes",
        drain_on_shutdown=settings.kill_grace + 1.0, connection=connection,
    )


def channel_event_stream(
    channel: LogSource,
    cursor: int,
    settings: Settings,
    shutdown: Event,
    visible: Callable[[LogEvent], bool] | None = None,
    client_socket: socket.socket | None = None,
    connection: ClientConnection | None = None,
) -> Iterator[bytes]:
    """Replay a channel's retained messages after ``cursor``, then follow it live.

    A client that hangs up is noticed at once, even while nothing is published
    (otherwise only at the second failed heartbeat): by the parked stream with
    ``connection`` (direct delivery), else by a watcher on ``client_socket``.
    """
    if connection is not None:
        # Returned, not wrapped: each generator level is C stack a parked greenlet keeps (see TrackedStream).
        return event_stream(
            channel, cursor, settings, shutdown, visible=visible, gap_field="missed_messages", connection=connection
        )
    return _channel_stream_watched(channel, cursor, settings, shutdown, visible, client_socket)


def _channel_stream_watched(
    channel: LogSource,
    cursor: int,
    settings: Settings,
    shutdown: Event,
    visible: Callable[[LogEvent], bool] | None,
    client_socket: socket.socket | None,
) -> Iterator[bytes]:
    with hangup_event(client_socket) as gone:
        yield from event_stream(
            _UntilGone(channel, gone), cursor, settings, shutdown, visible=visible, gap_field="missed_messages"
        )


class _UntilGone:
    """A log source that ends (reads as finished) once ``gone`` is set, and whose waits wake on it."""

    def __init__(self, source: LogSource, gone: Event) -> None:
        self.source = source
        self.gone = gone

    def read_after(self, cursor: int) -> LogRead:
        """The source's events, or an empty finished read once the client has gone."""
        if self.gone.is_set():
            return LogRead(events=[], missed_bytes=0, finished=True, last_id=cursor)
        return self.source.read_after(cursor)

    def wait(self, cursor: int, timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait on the source, waking early when the client goes."""
        return self.source.wait(cursor, timeout, (*wake, self.gone)) or self.gone.is_set()


def event_stream(
    source: LogSource,
    cursor: int,
    settings: Settings,
    shutdown: Event,
    *,
    gap_field: str,
    on_progress: Callable[[int], None] | None = None,
    visible: Callable[[LogEvent], bool] | None = None,
    drain_on_shutdown: float = 0.0,
    connection: ClientConnection | None = None,
) -> Iterator[bytes | Parked]:
    """The one SSE loop: replay after ``cursor``, follow live, heartbeat when idle, end on shutdown.

    With ``connection``, a stream that has caught up parks in its log's
    Delivery, which writes new events straight to the client (delivery.py):
    it yields a Parked ticket, on which the response body (TrackedStream) waits.
    """
    pending = [encode_retry(settings.retry_ms) + encode_comment("connected")]
    drain_deadline = None
    while True:
        try:
            read = source.read_after(cursor)
        except UnknownJob:
            break
        shown = read.events if visible is None else [event for event in read.events if visible(event)]
        frames = [event.frame for event in shown]
        if read.missed_bytes:
            # The gap sits where the dropped events were: after a job's pinned start event, if it was read
            # (only job logs pin one, and they are never filtered, so the index holds among the frames).
            frames.insert(read.gap_at, encode_json_event({gap_field: read.missed_bytes}, event="gap"))
        pending.extend(frames)
        if read.events:
            cursor = read.events[-1].id
        if pending:
            yield b"".join(pending)
            pending = []
            if on_progress is not None:
                on_progress(cursor)
        if read.finished:
            break
        if read.events:
            continue  # more may be waiting beyond the read limit
        timeout, wake = settings.heartbeat_interval, (shutdown,)
        if shutdown.is_set():
            if drain_deadline is None:
                drain_deadline = time.monotonic() + drain_on_shutdown
            timeout, wake = drain_deadline - time.monotonic(), ()
            if timeout <= 0:
                break
        elif connection is not None and not connection.pipelined and (log_ := _event_log(source)) is not None:
            parked = Parked(delivery_for(log_), connection, cursor, visible, on_progress, timeout, shutdown)
            del read, shown, frames, log_  # an idle subscriber may stay parked for hours: hold nothing more
            yield parked  # TrackedStream waits on it, outside this generator
            cursor = parked.cursor
            if parked.leftover:
                send_rest(connection, parked.leftover, settings.send_timeout)
                if on_progress is not None:
                    on_progress(cursor)
            if parked.gone or parked.ended:
                return
            if parked.timed_out and not shutdown.is_set():
                yield HEARTBEAT
            continue
        if not source.wait(cursor, timeout, wake=wake) and not shutdown.is_set():
            yield HEARTBEAT
    if pending:
        yield b"".join(pending)
    if shutdown.is_set():
        yield shutdown_farewell(settings)


def shutdown_farewell(settings: Settings) -> bytes:
    """The last frame of a stream cut by a graceful shutdown: come back after a jittered delay."""
    delay = settings.retry_ms + random.randint(0, settings.shutdown_retry_jitter_ms)
    return encode_retry(delay) + encode_comment("server restarting; reconnect to resume")


def job_output_stream(
    store: JobStore, job_id: str, settings: Settings, shutdown: Event, client_socket: socket.socket | None = None
) -> Iterator[bytes]:
    """The job's combined raw output, byte-exact, followed live until the job ends.

    If the bounded buffer drops bytes this reader has not sent yet, the
    response is aborted rather than silently spliced: raw bytes have no way
    to say "something is missing here". Raw bytes have no heartbeat either,
    so a departed client is noticed by watching its socket.
    """
    with hangup_event(client_socket) as gone:
        # An empty first write makes gunicorn send the headers before any output exists.
        yield b""
        yield from _follow_output(store, job_id, settings, (shutdown, gone))


def _follow_output(store: JobStore, job_id: str, settings: Settings, stop: tuple[Event, ...]) -> Iterator[bytes]:
    cursor = 0
    first = True
    while True:
        try:
            read = store.read_after(job_id, cursor)
        except UnknownJob:
            return
        if read.missed_bytes and not first:
            log.warning("job %s: /output reader fell %d bytes behind the buffer; aborting", job_id, read.missed_bytes)
            raise ConnectionAbortedError("output reader fell behind the buffer")
        first = False
        chunk = b"".join(event.raw for event in read.events if event.raw)
        if read.events:
            cursor = read.events[-1].id
        if chunk:
            yield chunk
        if read.finished or any(event.is_set() for event in stop):
            return
        if not read.events:
            store.wait(job_id, cursor, settings.heartbeat_interval, wake=stop)


@contextmanager
def hangup_event(sock: socket.socket | None) -> Iterator[Event]:
    """An Event set as soon as the client hangs up (see watch_for_disconnect), for as long as the block runs."""
    gone = Event()
    watcher = watch_for_disconnect(sock, gone.set)
    try:
        yield gone
    finally:
        if watcher is not None:
            watcher.kill(block=False)


def watch_for_disconnect(sock: socket.socket | None, on_disconnect: Callable[[], None]) -> gevent.Greenlet | None:
    """Call ``on_disconnect`` as soon as the client closes its connection, even while the stream is silent.

    A WSGI app only learns of a closed client when a write fails. For GET /run
    that could be long after the user pressed Ctrl-C, so this greenlet waits
    for the socket to become readable and peeks: end-of-file means the client
    (or nginx in front of it) has gone. It never consumes bytes.
    """
    if sock is None:
        return None

    def watch() -> None:
        try:
            while True:
                wait_read(sock.fileno())
                data = sock.recv(1, socket.MSG_PEEK)
                if not data:
                    on_disconnect()
                    return
                # The client sent something (a pipelined request): stop watching
                # rather than spin on a socket that stays readable.
                return
        except OSError:
            on_disconnect()

    return gevent.spawn(watch)


def multiplex_stream(
    sources: dict[str, tuple[LogSource, Callable[[], Event]]],
    cursors: dict[str, int],
    settings: Settings,
    shutdown: Event,
    visible: Callable[[str, LogEvent], bool],
    client_socket: socket.socket | None = None,
) -> Iterator[bytes]:
    """Several jobs and channels on one connection, with one composite id.

    ``sources`` maps a source key (``job:<id>``, ``channel:<name>``) to its log
    and a function returning the log's current "changed" event (it is replaced
    at every append). Ends when every source is a finished job; channels never end.

    On graceful shutdown the jobs are being stopped: their final events (the
    ``exit``) get up to ``kill_grace`` + 1 s to arrive before the farewell.
    Channels are not waited for. With ``client_socket``, a client that hangs
    up ends the stream at once, even while every source is silent.
    """
    with hangup_event(client_socket) as gone:
        yield from _multiplex(sources, cursors, settings, shutdown, visible, gone)


def _multiplex(
    sources: dict[str, tuple[LogSource, Callable[[], Event]]],
    cursors: dict[str, int],
    settings: Settings,
    shutdown: Event,
    visible: Callable[[str, LogEvent], bool],
    gone: Event,
) -> Iterator[bytes]:
    positions = {key: cursors.get(key, 0) for key in sources}
    finished: set[str] = set()
    pending = [encode_retry(settings.retry_ms) + encode_comment("connected")]
    drain_deadline: float | None = None
    while not gone.is_set():
        # Taken before reading: an append while a frame is being written still wakes the wait below.
        wake_on = {key: changed() for key, (_, changed) in sources.items() if key not in finished}
        progressed = False
        for key, (source, _) in sources.items():
            if key in finished:
                continue
            try:
                read = source.read_after(positions[key])
            except UnknownJob:
                finished.add(key)
                continue
            if read.missed_bytes:
                pending.append(retag_gap(key, read.missed_bytes, format_composite(positions)))
            for event in read.events:
                positions[key] = event.id
                if visible(key, event):
                    pending.append(retag(event, key, format_composite(positions)))
            progressed = progressed or bool(read.events)
            if read.finished:
                finished.add(key)
        if pending:
            yield b"".join(pending)
            pending = []
        if len(finished) == len(sources):
            return
        if progressed:
            continue
        if shutdown.is_set():
            # Wait (bounded) for the jobs still running to write their final events; not for channels.
            if drain_deadline is None:
                drain_deadline = time.monotonic() + settings.kill_grace + 1.0
            remaining = drain_deadline - time.monotonic()
            jobs = [event for key, event in wake_on.items() if key not in finished and _is_job(key)]
            if not jobs or remaining <= 0:
                yield shutdown_farewell(settings)
                return
            gevent.wait([*jobs, gone], timeout=remaining, count=1)
            continue
        waits = [event for key, event in wake_on.items() if key not in finished]
        if not gevent.wait([*waits, shutdown, gone], timeout=settings.heartbeat_interval, count=1):
            yield HEARTBEAT


def _is_job(key: str) -> bool:
    return key.startswith("job:")


class TrackedStream:
    """A response body (WSGI iterable) that StreamTracker times; gunicorn iterates it directly.

    A class rather than a generator, and handed to gunicorn without werkzeug's
    wrappers (direct_passthrough): each level of generators between gunicorn
    and the stream's wait is C stack that every parked greenlet keeps saved,
    which was the largest part of an idle subscriber's memory.
    """

    __slots__ = ("_counted", "_frames", "_greenlet", "_label", "_on_close", "_tracker")

    def __init__(
        self, tracker: StreamTracker, frames: Iterator[bytes], label: str, on_close: tuple[Callable[[], None], ...]
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

    def __iter__(self) -> TrackedStream:
        return self

    def __next__(self) -> bytes:
        tracker = self._tracker
        if self._greenlet is None:
            self._greenlet = gevent.getcurrent()
            tracker._opened(self._greenlet, self._label)
        else:
            tracker._writing[self._greenlet] = None  # gunicorn asks for more: the last write is done
        chunk = next(self._frames)
        while type(chunk) is Parked:
            # The stream has caught up: wait here, with its generator suspended rather than on the stack.
            chunk.wait()
            chunk = next(self._frames)
        tracker._writing[self._greenlet] = time.monotonic()
        return chunk

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
        self._labels: dict[gevent.Greenlet, str] = {}
        self._sweeper: gevent.Greenlet | None = None

    @property
    def open_streams(self) -> int:
        """How many streams are open on this worker (started or about to start)."""
        return self.count

    def guard(
        self, frames: Iterator[bytes], label: str, on_close: Iterable[Callable[[], None]] = ()
    ) -> TrackedStream:
        """Pass ``frames`` through, timing each write; ``on_close`` runs when the server closes the response."""
        self._ensure_sweeper()
        return TrackedStream(self, frames, label, tuple(on_close))

    def _opened(self, greenlet: gevent.Greenlet, label: str) -> None:
        self._writing[greenlet] = None
        self._labels[greenlet] = label
        self._ensure_sweeper()

    def _closed(self, greenlet: gevent.Greenlet) -> None:
        self._writing.pop(greenlet, None)
        self._labels.pop(greenlet, None)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.dead:
            self._sweeper = gevent.spawn(self._sweep)

    def _sweep(self) -> None:
        while self._writing:
            gevent.sleep(min(1.0, self.send_timeout / 2))
            now = time.monotonic()
            for greenlet, since in list(self._writing.items()):
                if since is not None and now - since > self.send_timeout and isinstance(greenlet, gevent.Greenlet):
                    log.warning(
                        "dropping stream %s: its client stopped reading (%.0f s on one write)",
                        self._labels.get(greenlet, "?"), now - since,
                    )
                    self._writing.pop(greenlet, None)
                    greenlet.kill(block=False)
