"""Runs kept by a store no other host shares (the memory and history stores): bounded, in this worker; and the
events every store sets when a run's record is saved, or a run's job ends (RunChanges). No I/O."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from weakref import WeakValueDictionary

from gevent.event import Event

MAX_RUNS = 1000  # the newest runs kept (and listed, GET /runs); older ones are forgotten (GET /runs/<id>: 404)
UNDER_WAY = {"refused": "its start is under way already"}


class RunChanges:
    """The events a store sets when a run's record is saved, for this worker's streams of that run (keyed by run
    id); or when a run's job ends, for its coordinator (``Store.job_ended``, keyed by job id)."""

    def __init__(self) -> None:
        # Weak: an event lives as long as a stream waits on it, so runs nobody follows cost nothing here.
        self._events: WeakValueDictionary[str, Event] = WeakValueDictionary()

    def event(self, run_id: str) -> Event:
        """Set at the run's next save (shared by every stream of the run in this worker)."""
        event = self._events.get(run_id)
        if event is None:
            event = self._events[run_id] = Event()
        return event

    def changed(self, run_id: str) -> None:
        """The run's record was saved: its waiters wake, and the next ``event`` is a fresh one."""
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()

    def changed_all(self) -> None:
        """Any record may have changed unseen (the store's notifications were lost): every waiter wakes."""
        for run_id in list(self._events):
            self.changed(run_id)


class LocalRuns:
    """Run records, cancel requests and the one start per run and host, for one worker."""

    def __init__(self, max_runs: int = MAX_RUNS) -> None:
        self.max_runs = max_runs
        self.records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.cancels: set[str] = set()
        self.starts: OrderedDict[tuple[str, str], dict[str, Any] | None] = OrderedDict()
        self.changes = RunChanges()

    def save(self, run_id: str, record: dict[str, Any]) -> None:
        """Keep a run's record, as the newest; the oldest beyond ``max_runs`` go (with their cancels)."""
        self.records[run_id] = record
        self.records.move_to_end(run_id)
        while len(self.records) > self.max_runs:
            forgotten, _ = self.records.popitem(last=False)
            self.cancels.discard(forgotten)
        self.changes.changed(run_id)

    def newest(self, limit: int, user: str | None = None) -> list[dict[str, Any]]:
        """At most ``limit`` records, newest created first (``user``'s only, if given)."""
        records = (r for r in self.records.values() if user is None or r.get("user") == user)
        return sorted(records, key=lambda r: r.get("created_at", 0), reverse=True)[:limit]

    def claim_start(self, run_id: str, host: str) -> dict[str, Any] | None:
        """None: the caller starts it; else the answer of the start there was (or that one is under way)."""
        key = (run_id, host)
        if key in self.starts:
            return self.starts[key] or UNDER_WAY
        self.starts[key] = None
        while len(self.starts) > self.max_runs * 4:
            self.starts.popitem(last=False)
        return None

    def record_start(self, run_id: str, host: str, answer: dict[str, Any] | None) -> None:
        """What the start that ``claim_start`` let through answered; None: it started nothing (claim released)."""
        if answer is None:
            self.starts.pop((run_id, host), None)
        else:
            self.starts[(run_id, host)] = answer
