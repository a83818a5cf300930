"""The owner's appends to Redis: every job event this worker's runners append, in pipelined batches.

The runner appends to the job's local log (flow control and this worker's
viewers, as with the memory store) and the same event comes here. The first
event of a batch schedules a flush ``FLUSH_DELAY`` later; everything appended
meanwhile goes in one ``MULTI``: a plain ``XADD`` per event (its bytes never
go through Lua), then one ``JOB_APPEND`` script call per job for its record.
So a flood of output costs one round trip per 5 ms, not one per event. The
runner's updates of a job's record (started, stopping, ended) ride in the
same ``MULTI`` after the job's events (``update_record``): a job's end lands
with its ``exit`` event, and a short job costs two round trips fewer.

The byte budget of a job's stream is kept here, where the events are made:
the same arithmetic as the memory store's log (frame + output + overhead per
event, the start event pinned), so the stream is trimmed at the same points
and a viewer behind the trim gets the same ``gap``.

Viewers on other workers pace the job (pacing.py): each flush of a job with
more than half a window of output also reads its viewers' positions, and the
stream is never trimmed past a viewer that is still reading.

If Redis cannot be reached, the batch stays queued and is sent again later,
with the same ids: the script skips what was applied already. What waits is
bounded by ``job_buffer_bytes`` per job while Redis is away; beyond it the
oldest waiting events go as if trimmed, and readers get a ``gap`` that says
how much. While Redis is up but slower than the job, the job waits for it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import gevent
from gevent.event import Event

from ... import metrics
from ..base import LogEvent
from .codec import event_size, frame_tail
from .pacing import ViewerPositions
from .scripts import execute_multi

log = logging.getLogger(__name__)

FLUSH_DELAY = 0.005  # seconds: the most an event waits before its batch leaves for Redis
RETRY_DELAY = 0.5  # seconds between tries while Redis is unreachable
# Bytes queued while a flush was under way from which the next flush leaves at once, not FLUSH_DELAY later: a
# flood of output batches itself (everything that came during the round trip), and Redis is never left idle.
FLOOD_BYTES = 256 * 1024


@dataclass(slots=True)
class _JobStream:
    """What the writer knows of one job's stream: what it retains, and what it has dropped."""

    max_bytes: int
    retained: deque = field(default_factory=deque)  # (id, size) of every entry but the pinned start
    retained_bytes: int = 0
    dropped_through: int = 0
    start_id: int = 0
    output_bytes: int = 0
    trimmed: bool = False  # dropped more since the last flush
    waiting: int = 0  # bytes of events not yet in Redis (queued, or in a flush under way)
    viewers: ViewerPositions = field(default_factory=ViewerPositions)  # on other workers (pacing.py)
    keep_from: int | None = None  # the slowest of them: nothing after it is trimmed

    def add(self, event: LogEvent) -> None:
        self.output_bytes += len(event.raw)
        if event.kind == "start" and not self.start_id and not self.retained:
            self.start_id = event.id
            return
        size = event_size(event)
        self.retained.append((event.id, size))
        self.retained_bytes += size
        keep_from = self.keep_from
        while self.retained_bytes > self.max_bytes and len(self.retained) > 1:
            if keep_from is not None and self.retained[0][0] > keep_from:
                break  # a viewer elsewhere has not read it: the job waits for it instead (pacing.py)
            dropped, dropped_size = self.retained.popleft()
            self.retained_bytes -= dropped_size
            self.dropped_through = dropped
            self.trimmed = True

    @property
    def dropped_bytes(self) -> int:
        return max(0, self.dropped_through - self.start_id)


class JobWriter:
    """Batches this worker's job events into Redis (see the module docstring)."""

    def __init__(self, client, append_script, keys: Callable[[str], list[str]], max_bytes: int,
                 finished_ttl: float, pace_key: Callable[[str], str]) -> None:
        self.client = client
        self.append_script = append_script
        self.keys = keys  # job id -> [its hash, its stream]
        self.pace_key = pace_key  # job id -> the hash of its viewers' positions (pacing.py)
        self.max_bytes = max_bytes
        # Units (output bytes) a job may get ahead of its slowest viewer elsewhere. Twice GET /run's owner's
        # window: positions arrive a few milliseconds late, and the stream is not trimmed past them anyway.
        self.window = max(max_bytes // 2, 1)
        self.finished_ttl = int(finished_ttl) or 1
        self._pending: dict[str, list[LogEvent]] = {}
        self._pending_bytes = 0
        self._records: dict[str, list[tuple]] = {}  # job id -> commands updating its record, for the next batch
        self._scripts = [append_script]  # what the batches' EVALSHAs run (loaded again if Redis lost them)
        self._streams: dict[str, _JobStream] = {}
        self._flusher: gevent.Greenlet | None = None
        self.failing = False  # the last flush failed: Redis is unreachable
        self._flushed = Event()  # set (and replaced) after every flush, whether it worked or not

    def add(self, job_id: str, event: LogEvent) -> None:
        """Queue an event of a job run here; it reaches Redis within FLUSH_DELAY (while Redis is up)."""
        stream = self._streams.get(job_id)
        if stream is None:
            stream = self._streams[job_id] = _JobStream(self.max_bytes)
        stream.add(event)
        pending = self._pending.setdefault(job_id, [])
        pending.append(event)
        size = event_size(event)
        stream.waiting += size
        self._pending_bytes += size
        if stream.waiting > self.max_bytes and self.failing:
            self._bound(stream, pending)
        if self._flusher is None:
            self._flusher = gevent.spawn_later(FLUSH_DELAY, self._flush)

    def update_record(self, job_id: str, commands: list[tuple], scripts: Iterable = ()) -> None:
        """Commands that update a job's record, sent in the ``MULTI`` of its next batch, after its events queued
        by then (within FLUSH_DELAY while Redis is up; kept, in order, while it is away). ``scripts``: the
        scripts of their EVALSHAs."""
        self._records.setdefault(job_id, []).extend(commands)
        for script in scripts:
            if script not in self._scripts:
                self._scripts.append(script)
        if self._flusher is None:
            self._flusher = gevent.spawn_later(FLUSH_DELAY, self._flush)

    def _bound(self, stream: _JobStream, pending: list[LogEvent]) -> None:
        """While Redis is away, keep at most ``max_bytes`` of a job's events waiting (while it is up but slower than
        the job, the job waits for it: ``behind``, which one event of up to coalesce_bytes may overshoot):
        the oldest go (not its start or its newest), and count as trimmed, so that readers get a ``gap``
        saying how much. The job itself never waits for Redis, and the worker's memory stays bounded."""
        while stream.waiting > self.max_bytes and len(pending) > 1:
            index = 1 if pending[0].kind == "start" else 0
            if index >= len(pending) - 1:
                break
            dropped = pending.pop(index)
            stream.waiting -= event_size(dropped)
            stream.dropped_through = max(stream.dropped_through, dropped.id)
            while stream.retained and stream.retained[0][0] <= dropped.id:
                stream.retained_bytes -= stream.retained.popleft()[1]
            stream.trimmed = True

    def behind(self, job_id: str) -> bool:
        """Whether Redis, up but slower than the job, is so far behind that the job must wait for it (flow
        control, as for a terminal: its output is never dropped while Redis takes it, only while it is away)."""
        stream = self._streams.get(job_id)
        return stream is not None and not self.failing and stream.waiting > self.max_bytes // 2

    def wait_until_caught_up(self, job_id: str, wake: Iterable[Event] = ()) -> None:
        """Block (the job's runner) while ``behind(job_id)``, or until one of ``wake`` is set."""
        while self.behind(job_id):
            gevent.wait([self._flushed, *wake], count=1)
            if any(event.is_set() for event in wake):
                return

    def slowest_viewer(self, job_id: str) -> int | None:
        """The position of the job's slowest viewer on another worker that is still reading; None: none."""
        stream = self._streams.get(job_id)
        return None if stream is None else stream.keep_from

    def refresh_viewers(self, job_id: str) -> None:
        """Read the job's viewer positions now (while its runner waits for them)."""
        stream = self._streams.get(job_id)
        if stream is None:
            return
        try:
            fields = self.client.hgetall(self.pace_key(job_id))
        except Exception as exc:  # Redis away: nobody is waited for until it answers
            log.debug("cannot read the viewer positions of %s: %s", job_id, exc)
            fields = {}
        self._take_viewers(stream, fields)

    def expect_viewer(self, job_id: str) -> None:
        """A run's job, not started yet: it waits for its run's stream from the start (pacing.py)."""
        stream = self._streams.get(job_id)
        if stream is None:
            stream = self._streams[job_id] = _JobStream(self.max_bytes)
        stream.viewers.expect()
        stream.keep_from = stream.viewers.slowest()

    def viewer_came(self, job_id: str) -> None:
        """The run's stream has come, in this worker: the job waits for it there (EventLog.hold), not here."""
        stream = self._streams.get(job_id)
        if stream is not None:
            stream.viewers.came()
            stream.keep_from = stream.viewers.slowest()

    @staticmethod
    def _take_viewers(stream: _JobStream, fields: dict) -> None:
        stream.viewers.update(fields)
        stream.keep_from = stream.viewers.slowest()

    def _notify(self) -> None:
        flushed, self._flushed = self._flushed, Event()
        flushed.set()

    def pending(self) -> int:
        """Events queued and not yet in Redis."""
        return sum(map(len, self._pending.values()))

    def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        batch_bytes, self._pending_bytes = self._pending_bytes, 0
        records, self._records = self._records, {}
        try:
            started = time.monotonic()
            commands = []
            for job_id, events in batch.items():
                commands.extend(self._commands(job_id, events))
                commands.extend(records.get(job_id, ()))
            for job_id, updates in records.items():
                if job_id not in batch:
                    commands.extend(updates)
            # Jobs with more than half a window of output learn their viewers' positions in the same round trip.
            paced = [job_id for job_id in batch
                     if (stream := self._streams.get(job_id)) is not None and stream.output_bytes > self.window // 2]
            commands.extend(("HGETALL", self.pace_key(job_id)) for job_id in paced)
            # An XADD refused as "equal or smaller" was applied before (a batch sent again), or the job was declared
            # lost (JOB_APPEND then changes nothing).
            results = execute_multi(self.client, commands, self._scripts, refused=("equal or smaller",))
            metrics.observe_store_write(time.monotonic() - started)
        except Exception as exc:  # Redis unreachable (or any error): keep the batch, in order, and try again
            if not self.failing:
                log.warning("cannot append to Redis (%s); keeping %d jobs' events until it answers", exc, len(batch))
            self.failing = True
            for job_id, events in self._pending.items():
                batch.setdefault(job_id, []).extend(events)
            self._pending = batch
            self._pending_bytes += batch_bytes
            for job_id, updates in self._records.items():
                records.setdefault(job_id, []).extend(updates)
            self._records = records
            self._flusher = gevent.spawn_later(RETRY_DELAY, self._flush)
            self._notify()
            return
        self.failing = False
        for job_id, fields in zip(paced, results[len(results) - len(paced):], strict=True):
            stream = self._streams.get(job_id)
            if stream is not None:
                self._take_viewers(stream, fields)
        for job_id, events in batch.items():
            stream = self._streams.get(job_id)
            if stream is not None:
                stream.waiting -= sum(map(event_size, events))
            if events[-1].kind in ("exit", "err") and job_id not in self._pending:
                self._streams.pop(job_id, None)
        if not self._pending and not self._records:
            self._flusher = None
        else:
            delay = 0 if self._pending_bytes >= FLOOD_BYTES else FLUSH_DELAY
            self._flusher = gevent.spawn_later(delay, self._flush)
        self._notify()

    def _commands(self, job_id: str, events: list[LogEvent]) -> list[tuple]:
        job_hash, stream_key = self.keys(job_id)
        commands: list[tuple] = []
        start_id, start_tail, fin = "", b"", "0"
        for event in events:
            raw, kind, tail = event.raw, event.kind, frame_tail(event.frame)
            if not raw:
                commands.append(("XADD", stream_key, b"%d-0" % event.id, "k", kind, "f", tail))
            elif raw.isascii():  # ASCII output is its own text, already in the frame: not stored twice (codec.py)
                commands.append(("XADD", stream_key, b"%d-0" % event.id, "k", kind, "f", tail, "o", "1"))
            else:
                commands.append(("XADD", stream_key, b"%d-0" % event.id, "k", kind, "f", tail, "r", raw))
            if kind == "start":
                start_id, start_tail = event.id, tail
            elif kind in ("exit", "err"):
                fin = "1"
        stream = self._streams[job_id]
        trim = ""
        if stream.trimmed and stream.retained:
            trim = f"{stream.retained[0][0]}-0"
            stream.trimmed = False
        commands.append(("EVALSHA", self.append_script.sha, 2, job_hash, stream_key, events[-1].id,
                         stream.output_bytes, stream.dropped_bytes, stream.dropped_through, trim, self.finished_ttl,
                         start_id, start_tail, fin))
        return commands

