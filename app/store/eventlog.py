"""The memory store's event log (one per job, one per channel): ordered, bounded in memory, with waiting.

Event ids (offsets, see base.py) count "units": every output byte is one unit
and every other event is one unit, so ids strictly increase and the gap
between two ids tells how many output bytes lay between them (for a channel,
how many messages). That is what lets a viewer who falls behind the bounded
buffer be told exactly how much it missed.

Frames are encoded once, when appended, and the same bytes go to every viewer.
A channel's frames carry ``<epoch>-<id>``, a job's the bare id.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event

from ..streaming.sse import encode_json_frame
from .base import TERMINAL_EVENTS, VIEWER_STALL, JobLog, LogEvent, LogRead, Pacing

if TYPE_CHECKING:
    from .budget import MemoryBudget

# What an event costs beyond its frame and output bytes: the tuple, two bytes objects, the id
# (measured with tracemalloc at about 160 bytes, plus the allocator's own headers). Counted, so
# that a command writing many tiny events cannot hold far more memory than its budget says.
EVENT_OVERHEAD_BYTES = 200


def _event_id(event: LogEvent) -> int:
    return event.id


class EventLog(JobLog):
    """Append-only, bounded event log.

    For a job (the defaults) the ``start`` event is kept whatever the buffer
    drops and ``exit``/``err`` end the log; a channel keeps ``max_events``
    messages and never ends. ``key`` is the log's key in the store (what the
    listener is told), ``epoch`` its epoch (a channel's; a job has none).
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        key: str = "",
        epoch: str = "",
        max_events: int | None = None,
        terminal_kinds: frozenset[str] = TERMINAL_EVENTS,
        pin_start: bool = True,
        budget: MemoryBudget | None = None,
        deliver: Callable[[str, LogEvent], None] | None = None,
    ) -> None:
        self.key = key
        self.epoch = epoch
        self._id_prefix = f"{epoch}-" if epoch else ""
        self.max_bytes = max_bytes
        self.max_events = max_events
        self.terminal_kinds = terminal_kinds
        self.pin_start = pin_start
        self._start: LogEvent | None = None  # kept whatever the buffer drops
        self._events: list[LogEvent] = []
        self._head = 0  # index of the oldest retained event in _events
        self._retained_bytes = 0
        self._dropped_through = 0  # id of the newest dropped event
        self._units = 0
        self.output_bytes = 0
        self.finished = False
        self._changed = Event()
        # Flow control for an owning viewer (GET /run): the runner waits while
        # the owner is far behind instead of dropping output it has not seen.
        self._owner_cursor: int | None = None
        self._holds: list[ViewerHold] = []  # paced viewers (Store.pace): waited for like the owner
        self._expected: ViewerHold | None = None  # stands in for a run's stream until it comes (expect_viewer)
        self._room = Event()
        self._room.set()
        # Live delivery (the store's listener): told of every event as soon as it is appended.
        self.deliver = deliver
        # The worker's budget for every log's memory (budget.py), told of every byte kept and dropped.
        self._budget: MemoryBudget | None = None
        if budget is not None:
            self.attach(budget)

    def restore(self, events: list[LogEvent], last_id: int) -> None:
        """Start from history kept elsewhere (on disk): ``events`` (ascending ids) are retained, ids go on
        after ``last_id``, and what came before the first of them counts as dropped. Only on a new log."""
        size = sum(len(event.frame) + len(event.raw) + EVENT_OVERHEAD_BYTES for event in events)
        self._events = list(events)
        self._retained_bytes = size
        self._units = max(last_id, events[-1].id if events else 0)
        self._dropped_through = events[0].id - 1 if events else self._units
        freed = self._trim()
        if self._budget is not None:
            self._budget.used += size - freed

    def begin_after(self, offset: int) -> None:
        """Start an empty log after ``offset`` (a mirror of a log kept elsewhere: what lies before it is read there)."""
        self._units = self._dropped_through = offset

    @property
    def last_id(self) -> int:
        """The id of the newest event, 0 if none."""
        return self._units

    @property
    def retained_bytes(self) -> int:
        """The memory this log's retained events stand for (frames, output, EVENT_OVERHEAD_BYTES each)."""
        return self._retained_bytes

    @property
    def can_shrink(self) -> bool:
        """Whether anything but the newest event (and a pinned start) is retained."""
        return len(self._events) - self._head > 1

    @property
    def dropped_bytes(self) -> int:
        """Output bytes no longer held by the buffer."""
        start_units = self._start.id if self._start else 0
        return max(0, self._dropped_through - start_units)

    def append(self, kind: str, payload: Any, raw: bytes = b"", audience: str | None = None, *,
               ascii_out: bool = False) -> LogEvent:
        """Append an event, encode its frame once, deliver it, and wake every waiting viewer."""
        if self.finished:
            raise RuntimeError("the log already holds its terminal event")
        # Encode first: a payload that cannot be encoded must not consume an id.
        event_id = self._units + (len(raw) if raw else 1)
        prefix = self._id_prefix
        frame, data_start = encode_json_frame(payload, kind, f"{prefix}{event_id}" if prefix else event_id)
        self._units = event_id
        return self.add_event(LogEvent(event_id, kind, frame, data_start, raw, audience, ascii_out))

    def add_event(self, event: LogEvent) -> LogEvent:
        """Keep an event already encoded, its id above every id kept (a mirror of a log kept elsewhere)."""
        kind, raw = event.kind, event.raw
        self._units = event.id
        self.output_bytes += len(raw)
        budget = self._budget
        if self.pin_start and kind == "start" and self._start is None and not self._events:
            self._start = event
        else:
            self._events.append(event)
            size = len(event.frame) + len(raw) + EVENT_OVERHEAD_BYTES
            self._retained_bytes += size
            freed = self._trim()
            if budget is not None:
                budget.used += size - freed
        if kind in self.terminal_kinds:
            self.finished = True
            if budget is not None:
                budget.finished(self)
        # Direct delivery first: it is what a watching client is waiting for. Neither step
        # switches greenlets, so no reader can see the event between them.
        try:
            if self.deliver is not None:
                self.deliver(self.key, event)
        finally:
            self._notify()
        if budget is not None and budget.used > budget.threshold:
            budget.reclaim()
        return event

    def _trim(self) -> int:
        """Drop the oldest events beyond the bounds; the bytes freed (the caller tells the budget)."""
        events = self._events
        # Never drop what the owning viewer (or a paced one) has not read: the runner's wait_for_room
        # bounds that backlog instead (JSON-escaped control bytes can make frames 6x the output).
        keep_from = self._slowest()
        retained = self._retained_bytes
        while (
            retained > self.max_bytes
            or (self.max_events is not None and len(events) - self._head > self.max_events)
        ) and len(events) - self._head > 1:
            old = events[self._head]
            if keep_from is not None and old.id > keep_from:
                break
            events[self._head] = None  # type: ignore[call-overload]
            self._head += 1
            retained -= len(old.frame) + len(old.raw) + EVENT_OVERHEAD_BYTES
            self._dropped_through = old.id
        freed = self._retained_bytes - retained
        self._retained_bytes = retained
        if self._head > 1024 and self._head * 2 > len(events):
            del events[: self._head]
            self._head = 0
        return freed

    def _trim_and_report(self) -> None:
        freed = self._trim()
        if self._budget is not None:
            self._budget.used -= freed

    # The worker's memory budget (budget.py).

    def attach(self, budget: MemoryBudget) -> None:
        """Report this log's memory to ``budget`` from now on."""
        self._budget = budget
        budget.attach(self)
        if self.finished:
            budget.finished(self)

    def detach(self) -> None:
        """Stop reporting to the budget (the log is being forgotten)."""
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.detach(self)

    def drop_history(self) -> None:
        """Drop every retained event but the newest, keeping the bound for what comes next."""
        bound, self.max_bytes = self.max_bytes, 0
        self._trim_and_report()
        self.max_bytes = bound

    def shrink_to(self, max_bytes: int) -> None:
        """Keep at most ``max_bytes`` from now on, dropping the oldest events beyond it (viewers get a gap)."""
        self.max_bytes = min(self.max_bytes, max_bytes)
        self._trim_and_report()

    def _notify(self) -> None:
        changed, self._changed = self._changed, Event()
        changed.set()

    @property
    def retained_from(self) -> int:
        """The id just before the oldest event still held (a pinned start aside): reading after it misses nothing."""
        return self._dropped_through

    def read_after(self, cursor: int, limit: int = 512, *, reset: bool = False) -> LogRead:
        """Events with id > cursor (at most ``limit``), and how many units were lost before them.

        ``reset``: said in the answer (the caller's position was of another epoch; see base.LogRead).
        """
        events: list[LogEvent] = []
        if self._start is not None and cursor < self._start.id:
            events.append(self._start)
        start_units = self._start.id if self._start else 0
        missed = max(0, self._dropped_through - max(cursor, start_units))
        index = bisect.bisect_right(self._events, cursor, lo=self._head, key=_event_id)
        gap_at = len(events)
        events.extend(self._events[index : index + limit])
        more = index + limit < len(self._events)
        return LogRead(
            events=events,
            missed=missed,
            finished=self.finished and not more,
            last_id=self._units,
            gap_at=gap_at,
            epoch=self.epoch,
            reset=reset,
        )

    @property
    def changed(self) -> Event:
        """Set at the next append; for waiting on several logs at once."""
        return self._changed

    def wait(self, cursor: int, timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait until there is an event after ``cursor``, the log ends, a ``wake`` event fires, or timeout."""
        if self._units > cursor or self.finished:
            return True
        ready = gevent.wait([self._changed, *wake], timeout=timeout, count=1)
        return bool(ready)

    # Flow control for the owning viewer of a /run job.

    def claim_owner(self) -> None:
        """From now on the runner waits for the owning viewer rather than drop what it has not read."""
        self._owner_cursor = 0

    def release_owner(self) -> None:
        """The owner is gone: never hold the runner back again."""
        self._owner_cursor = None
        self._room.set()

    def owner_read_through(self, offset: int) -> None:
        """Record the owner's progress and let the runner go on when it has caught up enough."""
        if self._owner_cursor is None:
            return
        self._owner_cursor = offset
        if not self._owner_behind():
            self._room.set()

    def _owner_limit(self) -> int:
        # Units are output bytes; frames roughly double them in memory, so a
        # quarter of the budget keeps the owner's backlog well inside it.
        return max(self.max_bytes // 4, 1)

    def owner_far_behind(self) -> bool:
        """True while the owning viewer is so far behind that the runner must wait for it."""
        return self._owner_behind()

    def hold(self, after: int) -> ViewerHold:
        """A paced viewer that has sent through ``after``: the runner waits for it as for the owner (unless it
        stops reading for VIEWER_STALL seconds)."""
        if self._expected is not None:
            self._expected, expected = None, self._expected
            self._release(expected)
        hold = ViewerHold(self, after)
        self._holds.append(hold)
        return hold

    def expect_viewer(self) -> None:
        """A run's job: wait for its stream from the start (see JobLog)."""
        self._expected = ViewerHold(self, 0)
        self._holds.append(self._expected)

    def _release(self, hold: ViewerHold) -> None:
        if hold in self._holds:
            self._holds.remove(hold)
            self._room.set()  # wait_for_room looks again

    def _viewer_moved(self) -> None:
        if not self._owner_behind():
            self._room.set()

    def _slowest(self) -> int | None:
        """The position of the slowest viewer the runner waits for (the owner's, a paced one's), if any."""
        cursor = self._owner_cursor
        if self._holds:
            reading_since = time.monotonic() - VIEWER_STALL
            for hold in self._holds:
                if hold.moved_at >= reading_since and (cursor is None or hold.offset < cursor):
                    cursor = hold.offset
        return cursor

    def _next_stall(self) -> float | None:
        """Seconds until a paced viewer still waited for would count as stalled (None: there is none)."""
        if not self._holds:
            return None
        now = time.monotonic()
        left = [hold.moved_at + VIEWER_STALL - now for hold in self._holds]
        waiting = [seconds for seconds in left if seconds > 0]
        return min(waiting) + 0.01 if waiting else None

    def _owner_behind(self) -> bool:
        # This log's viewers alone (a subclass may add other reasons to wait to owner_far_behind).
        if not self._holds:
            return self._owner_cursor is not None and self._units - self._owner_cursor > self._owner_limit()
        slowest = self._slowest()
        return slowest is not None and self._units - slowest > self._owner_limit()

    def wait_for_room(self, wake: Iterable[Event] = ()) -> None:
        """Block the runner while the owning viewer (or a paced one still reading) is too far behind."""
        while self._owner_behind():
            self._room.clear()
            gevent.wait([self._room, *wake], count=1, timeout=self._next_stall())
            if any(event.is_set() for event in wake):
                return


class ViewerHold(Pacing):
    """A paced viewer of a log in this worker (EventLog.hold): its position, reported as it sends."""

    __slots__ = ("log", "moved_at", "offset")

    def __init__(self, log: EventLog, offset: int) -> None:
        self.log = log
        self.offset = offset
        self.moved_at = time.monotonic()

    def read_through(self, offset: int) -> None:
        """The viewer has sent everything through ``offset``."""
        if offset > self.offset:
            self.offset = offset
            self.moved_at = time.monotonic()
            self.log._viewer_moved()

    def close(self) -> None:
        """The viewer is gone."""
        self.log._release(self)
