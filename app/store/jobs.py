"""Jobs and the store that holds them with their event logs.

``JobStore`` is the one interface the rest of the service uses: create a job,
read its metadata, append an event, read events after an id, wait for new
ones. ``MemoryJobStore`` keeps everything in this worker process; a Redis
Streams store can implement the same methods so that several workers and
hosts serve one job.
"""

from __future__ import annotations

import abc
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gevent.event import Event

from ..policy.commandline import display_command
from ..states import LIVE_STATES, JobState
from .budget import MemoryBudget
from .eventlog import EventLog, LogRead


class UnknownJob(KeyError):
    """No job with that id is kept (never existed, or pruned)."""


class TooManyJobs(Exception):
    """The limit of concurrently running jobs is reached (``per_owner``: the owner's own share of it)."""

    def __init__(self, per_owner: bool = False) -> None:
        super().__init__("the owner's share of running jobs is taken" if per_owner else "too many running jobs")
        self.per_owner = per_owner


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass
class Job:
    """A job's metadata, as shown by GET /jobs/<id>."""

    id: str
    argv: tuple[str, ...]
    timeout: float
    origin: str  # "run" (lives with its request) or "jobs" (detached)
    owner: str = "anonymous"
    action: str | None = None
    params: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    state: JobState = JobState.RUNNING
    pid: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    signal_name: str | None = None
    reason: str | None = None
    error: str | None = None
    output_bytes: int = 0
    dropped_bytes: int = 0
    cpu_seconds: float | None = None  # CPU time of all its processes, where measurable
    peak_memory_bytes: int | None = None  # peak memory of all its processes, where measurable

    @property
    def finished(self) -> bool:
        """True once the job has ended, however it ended."""
        return self.state not in LIVE_STATES

    def duration(self, now: float | None = None) -> float | None:
        """Seconds from start to end (or to now while running)."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else (now or time.time())
        return round(end - self.started_at, 6)

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape of a job."""
        return {
            "id": self.id,
            "argv": list(self.argv),
            "command": display_command(self.argv),
            "action": self.action,
            "params": self.params,
            "owner": self.owner,
            "state": self.state.value,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "signal_name": self.signal_name,
            "reason": self.reason,
            "error": self.error,
            "timeout": self.timeout,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "duration": self.duration(),
            "output_bytes": self.output_bytes,
            "dropped_bytes": self.dropped_bytes,
            "cpu_seconds": self.cpu_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "urls": {
                "self": f"/jobs/{self.id}",
                "events": f"/jobs/{self.id}/events",
                "output": f"/jobs/{self.id}/output",
            },
        }


class JobStore(abc.ABC):
    """Jobs and their event logs."""

    @abc.abstractmethod
    def create(
        self, argv: Iterable[str], timeout: float, origin: str, *, owner_limit: int | None = None, **details: Any
    ) -> Job:
        """Register a new running job (details: owner, action, params), or raise TooManyJobs.

        ``owner_limit``: how many running jobs the owner may have (None: no share of their own).
        """

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None:
        """A job by id, or None."""

    @abc.abstractmethod
    def list(self) -> list[Job]:
        """All kept jobs, newest first."""

    @abc.abstractmethod
    def append(self, job_id: str, kind: str, payload: Any, raw: bytes = b"") -> int:
        """Append an event to a job's log; returns its id."""

    @abc.abstractmethod
    def read_after(self, job_id: str, cursor: int) -> LogRead:
        """Events after ``cursor`` and how much output was lost before them."""

    @abc.abstractmethod
    def wait(self, job_id: str, cursor: int, timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait for an event after ``cursor``; False on timeout."""

    @abc.abstractmethod
    def finish(self, job_id: str, **fields: Any) -> Job:
        """Record how a job ended."""

    @abc.abstractmethod
    def running_count(self) -> int:
        """How many jobs are running now."""


class MemoryJobStore(JobStore):
    """The in-process store: jobs live as long as this worker, within retention limits."""

    def __init__(
        self,
        *,
        max_running: int,
        buffer_bytes: int,
        max_finished: int,
        finished_ttl: float,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.max_running = max_running
        self.buffer_bytes = buffer_bytes
        self.max_finished = max_finished
        self.finished_ttl = finished_ttl
        self.budget = budget  # the worker's memory budget, shared with the channels (budget.py)
        self._jobs: dict[str, Job] = {}
        self._logs: dict[str, EventLog] = {}
        # Kept in step by create/finish/_forget, so that starting a job costs O(1), not a pass
        # (and a sort) over every kept job: the ids still running, and the finished jobs in the
        # order they finished (their ended_at order), oldest first.
        self._running: set[str] = set()
        self._finished: OrderedDict[str, Job] = OrderedDict()
        self._running_by_owner: dict[str, int] = {}

    def create(
        self, argv: Iterable[str], timeout: float, origin: str, *, owner_limit: int | None = None, **details: Any
    ) -> Job:
        """Register a new running job (details: owner, action, params), or raise TooManyJobs."""
        self.prune()
        if len(self._running) >= self.max_running:
            raise TooManyJobs()
        if owner_limit is not None and self.running_count_of(details.get("owner", Job.owner)) >= owner_limit:
            raise TooManyJobs(per_owner=True)
        job_id = secrets.token_hex(8)
        job = Job(id=job_id, argv=tuple(argv), timeout=timeout, origin=origin, **details)
        self._jobs[job_id] = job
        self._logs[job_id] = EventLog(self.buffer_bytes, budget=self.budget)
        self._running.add(job_id)
        self._running_by_owner[job.owner] = self._running_by_owner.get(job.owner, 0) + 1
        return job

    def running_count_of(self, owner: str) -> int:
        """How many jobs the owner has running now."""
        return self._running_by_owner.get(owner, 0)

    def _not_running(self, job: Job) -> None:
        if job.id in self._running:
            self._running.discard(job.id)
            left = self._running_by_owner[job.owner] - 1
            if left:
                self._running_by_owner[job.owner] = left
            else:
                del self._running_by_owner[job.owner]

    def get(self, job_id: str) -> Job | None:
        """A job by id, or None."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if job.finished and time.time() - (job.ended_at or job.created_at) > self.finished_ttl:
            self._forget(job)
            return None
        self._sync_counters(job)
        return job

    def _forget(self, job: Job) -> None:
        # Viewers still reading a forgotten job see UnknownJob and end their stream.
        del self._jobs[job.id]
        self._logs.pop(job.id).detach()
        self._not_running(job)
        self._finished.pop(job.id, None)

    def log(self, job_id: str) -> EventLog:
        """The live log of a job in this process (for the runner and flow control)."""
        try:
            return self._logs[job_id]
        except KeyError:
            raise UnknownJob(job_id) from None

    def list(self) -> list[Job]:
        """All kept jobs, newest first."""
        self.prune()
        jobs = sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)
        for job in jobs:
            self._sync_counters(job)
        return jobs

    def _sync_counters(self, job: Job) -> None:
        log = self._logs[job.id]
        job.output_bytes = log.output_bytes
        job.dropped_bytes = log.dropped_bytes

    def append(self, job_id: str, kind: str, payload: Any, raw: bytes = b"") -> int:
        """Append an event to a job's log; returns its id."""
        return self.log(job_id).append(kind, payload, raw).id

    def read_after(self, job_id: str, cursor: int) -> LogRead:
        """Events after ``cursor`` and how much output was lost before them."""
        return self.log(job_id).read_after(cursor)

    def wait(self, job_id: str, cursor: int, timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait for an event after ``cursor``; False on timeout."""
        return self.log(job_id).wait(cursor, timeout, wake)

    def mark_started(self, job_id: str, pid: int) -> None:
        """Record the pid and start time."""
        job = self._jobs[job_id]
        job.pid = pid
        job.started_at = time.time()

    def mark_stopping(self, job_id: str) -> None:
        """A running job is being stopped."""
        job = self._jobs[job_id]
        if job.state is JobState.RUNNING:
            job.state = JobState.STOPPING

    def finish(self, job_id: str, **fields: Any) -> Job:
        """Record how a job ended."""
        job = self._jobs[job_id]
        for name, value in fields.items():
            setattr(job, name, value)
        if job.ended_at is None:
            job.ended_at = time.time()
        if job.finished:
            self._not_running(job)
            if job_id not in self._finished:  # a second finish keeps the job's place
                self._finished[job_id] = job
        self._sync_counters(job)
        return job

    def running_count(self) -> int:
        """How many jobs are running now."""
        return len(self._running)

    def prune(self, now: float | None = None) -> None:
        """Forget finished jobs beyond the count limit or older than the age limit.

        From the oldest finished on, and only as far as there is something to forget:
        O(1) when nothing is, O(forgotten) otherwise.
        """
        now = time.time() if now is None else now
        finished = self._finished
        excess = len(finished) - self.max_finished
        while finished:
            job = finished[next(iter(finished))]
            if excess <= 0 and now - (job.ended_at or job.created_at) <= self.finished_ttl:
                break
            self._forget(job)
            excess -= 1
