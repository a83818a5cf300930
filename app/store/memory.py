"""MemoryStore: every job, event log and channel in this worker's memory (the embedded default).

Jobs live as long as this worker, within the retention limits
(``max_finished_jobs``, ``finished_job_ttl``); their logs and the channels'
share one memory budget (budget.py). Channel epochs are made when a channel
is made, so all of them are new after a restart. Live delivery is a direct
call from ``append``: the event is delivered before ``append`` returns, and
no greenlet switch happens in between.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import gevent
from gevent.event import Event

from ..config import Settings
from ..policy.ratelimit import RateLimiter
from ..states import JobState
from .base import (
    CHANNEL_PREFIX,
    JOB_PREFIX,
    InputReply,
    LogEvent,
    LogListener,
    LogRead,
    Pacing,
    Position,
    Store,
    Subscription,
    TooManyJobs,
    UnknownLog,
    job_key,
)
from .budget import MemoryBudget
from .channels import ChannelHub
from .eventlog import EventLog
from .jobs import Job
from .runs import LocalRuns, RunChanges


class MemoryStore(Store):
    """The in-process store."""

    def __init__(
        self,
        *,
        max_running: int,
        buffer_bytes: int,
        max_finished: int,
        finished_ttl: float,
        max_buffered_bytes: int = 1 << 30,
        max_channels: int = 1000,
        channel_history: int = 1000,
        channel_history_bytes: int = 1 << 20,
    ) -> None:
        self.max_running = max_running
        self.buffer_bytes = buffer_bytes
        self.max_finished = max_finished
        self.finished_ttl = finished_ttl
        # One budget for every job's and channel's buffered events (budget.py).
        self.budget = MemoryBudget(max_buffered_bytes)
        self._deliver = None  # the listener's deliver, given to every log
        self._jobs: dict[str, Job] = {}
        self._logs: dict[str, EventLog] = {}
        # Kept in step by create/finish/_forget, so that starting a job costs O(1), not a pass
        # (and a sort) over every kept job: the ids still running, and the finished jobs in the
        # order they finished (their ended_at order), oldest first.
        self._running: set[str] = set()
        self._finished: OrderedDict[str, Job] = OrderedDict()
        self._running_by_owner: dict[str, int] = {}
        self.runs = LocalRuns()  # issue 20: this worker's runs (no other host shares this store)
        self.job_ends = RunChanges()  # by job id: set as a job ends (Store.job_ended)
        self.hub = ChannelHub(
            max_channels=max_channels, history=channel_history, history_bytes=channel_history_bytes,
            budget=self.budget,
        )

    @staticmethod
    def sizes(settings: Settings) -> dict[str, Any]:
        """The constructor's sizes and limits, from the settings (the history store sizes itself the same)."""
        return {
            "max_running": settings.max_running_jobs,
            "buffer_bytes": settings.job_buffer_bytes,
            "max_finished": settings.max_finished_jobs,
            "finished_ttl": settings.finished_job_ttl,
            "max_buffered_bytes": settings.max_buffered_bytes,
            "max_channels": settings.max_channels,
            "channel_history": settings.channel_history,
            "channel_history_bytes": settings.channel_history_bytes,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryStore:
        """The store as the settings size it."""
        return cls(**cls.sizes(settings))

    # The job registry.

    def create_job(
        self,
        argv: Iterable[str],
        timeout: float,
        origin: str,
        *,
        owner: str,
        action: str | None = None,
        params: dict[str, Any] | None = None,
        owner_limit: int | None = None,
        request_id: str | None = None,
        stderr: str = "separate",
        stdin: bool = False,
    ) -> Job:
        """Register a new running job and its log, or raise TooManyJobs."""
        self.prune()
        if len(self._running) >= self.max_running:
            raise TooManyJobs()
        if owner_limit is not None and self.running_count_of(owner) >= owner_limit:
            raise TooManyJobs(per_owner=True)
        job_id = secrets.token_hex(8)
        job = Job(id=job_id, argv=tuple(argv), timeout=timeout, origin=origin, owner=owner, action=action,
                  params=params, request_id=request_id, stderr=stderr, stdin=stdin)
        self._jobs[job_id] = job
        self._logs[job_id] = EventLog(self.buffer_bytes, key=job_key(job_id), budget=self.budget,
                                      deliver=self._deliver)
        self._running.add(job_id)
        self._running_by_owner[owner] = self._running_by_owner.get(owner, 0) + 1
        return job

    def running_count(self) -> int:
        """How many jobs are running now."""
        return len(self._running)

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

    def get_job(self, job_id: str) -> Job | None:
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
        # Viewers still reading a forgotten job see UnknownLog and end their stream.
        del self._jobs[job.id]
        self._logs.pop(job.id).detach()
        self._not_running(job)
        self._finished.pop(job.id, None)

    def list_jobs(self, *, state: str | None = None, owner: str | None = None) -> list[Job]:
        """Kept jobs, newest first; only those in ``state``, or of ``owner``, if given."""
        self.prune()
        jobs = sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)
        if state is not None:
            jobs = [job for job in jobs if job.state == state]
        if owner is not None:
            jobs = [job for job in jobs if job.owner == owner]
        for job in jobs:
            self._sync_counters(job)
        return jobs

    def _sync_counters(self, job: Job) -> None:
        log = self._logs[job.id]
        job.output_bytes = log.output_bytes
        job.dropped_bytes = log.dropped_bytes

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

    def finish_job(self, job_id: str, **fields: Any) -> Job:
        """Record how a job ended."""
        job = self._jobs[job_id]
        for name, value in fields.items():
            setattr(job, name, value)
        if job.ended_at is None:
            job.ended_at = time.time()
        ended = job.finished and job_id in self._running
        if job.finished:
            self._not_running(job)
            if job_id not in self._finished:  # a second finish keeps the job's place
                self._finished[job_id] = job
        self._sync_counters(job)
        if ended:
            self.job_ends.changed(job_id)  # its run's coordinator, waiting in this worker, looks at once
        return job

    def local_log(self, job_id: str) -> EventLog:
        """The job's log: every job of this store runs in this worker."""
        try:
            return self._logs[job_id]
        except KeyError:
            raise UnknownLog(job_key(job_id)) from None

    def pace(self, key: str, after: int, *, always: bool) -> Pacing | None:
        """A run's stream paces a running job (``always``); any other viewer here is fed as output is read."""
        log = self._logs.get(key[len(JOB_PREFIX):]) if always and key.startswith(JOB_PREFIX) else None
        if log is None or log.finished:
            return None
        return log.hold(after)

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

    # Jobs that run in other workers: none, with this store.

    def request_stop(self, job_id: str, reason: str) -> bool:
        """Every job of this store runs in this worker: no other worker to ask."""
        return False

    def set_stop_handler(self, handler: Callable[[str, str], object]) -> None:
        """Nothing to route: stop requests never come from another worker."""

    def request_input(self, job_id: str, data: bytes | None, timeout: float) -> InputReply | None:
        """Every job of this store runs in this worker: no other worker to ask."""
        return None

    def set_input_handler(self, handler: Callable[[str, bytes | None], InputReply]) -> None:
        """Nothing to route: input never comes from another worker."""

    # Event logs, by key.

    def _log(self, key: str) -> EventLog | None:
        if key.startswith(JOB_PREFIX):
            return self._logs.get(key[len(JOB_PREFIX):])
        if key.startswith(CHANNEL_PREFIX):
            return self.hub.peek(key[len(CHANNEL_PREFIX):])
        return None

    def _known_log(self, key: str) -> EventLog:
        log = self._log(key)
        if log is None:
            raise UnknownLog(key)
        return log

    def append(self, key: str, kind: str, payload: Any, raw: bytes = b"", audience: str | None = None) -> LogEvent:
        """Append an event to a log, encoded once and delivered at once; a channel is made if need be."""
        if key.startswith(CHANNEL_PREFIX):
            return self.hub.append(key[len(CHANNEL_PREFIX):], kind, payload, audience)
        return self._known_log(key).append(kind, payload, raw, audience)

    def read(self, key: str, after: Position | int, limit: int = 512, *, raw: bool = True) -> LogRead:
        """Up to ``limit`` events after ``after``; from the retained start, with ``reset``, for another epoch."""
        log = self._known_log(key)
        if after.__class__ is int:
            epoch, offset = "", after
        else:
            epoch, offset = after
        if epoch != log.epoch and (epoch or offset):  # another epoch's position, or a bare number for a channel
            return log.read_after(log.retained_from, limit, reset=True)
        return log.read_after(offset, limit)

    def wait(self, key: str, after: Position | int, timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait for an event after ``after`` (at once for another epoch, or a forgotten log); False on timeout."""
        log = self._log(key)
        if log is None or not _same_epoch(log, after):
            return True
        return log.wait(after if after.__class__ is int else after[1], timeout, wake)

    def wait_any(self, afters: Mapping[str, Position | int], timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait until any of the logs has something after its position; False on timeout."""
        changed = []
        for key, after in afters.items():
            log = self._log(key)
            if log is None or not _same_epoch(log, after):
                return True
            if log.last_id > (after if after.__class__ is int else after[1]) or log.finished:
                return True
            changed.append(log.changed)
        return bool(gevent.wait([*changed, *wake], timeout=timeout, count=1))

    def set_listener(self, listener: LogListener) -> None:
        """Every log, now and to come, delivers to ``listener`` as it appends."""
        self._deliver = listener.deliver
        for log in self._logs.values():
            log.deliver = self._deliver
        self.hub.set_deliver(self._deliver)

    # Channels.

    def ensure_channel(self, name: str, keep: Collection[str] = (), *, make_room: bool = True) -> None:
        """Make the channel if it does not exist (TooManyChannels when there is no room)."""
        self.hub.log(name, keep, make_room=make_room)

    def peek_channel(self, name: str) -> Position | None:
        """The channel's epoch and newest offset, or None if it does not exist."""
        log = self.hub.peek(name)
        return None if log is None else Position(log.epoch, log.last_id)

    def subscribe(self, name: str, user: str, *, pins: bool, keep: Collection[str] = ()) -> Subscription:
        """Count a subscriber until ``unsubscribe``, making the channel if need be."""
        return self.hub.subscribe(name, user, pins=pins, keep=keep)

    def unsubscribe(self, subscription: Subscription) -> None:
        """A subscriber counted by ``subscribe`` has gone."""
        self.hub.unsubscribe(subscription)

    def subscribers(self, name: str) -> int:
        """How many streams are subscribed to a channel now."""
        return self.hub.subscribers(name)

    def subscriptions_of(self, user: str) -> int:
        """How many channel subscriptions the user's open streams hold."""
        return self.hub.subscriptions_of(user)

    def describe_channels(self) -> list[dict[str, Any]]:
        """Every channel by name, with its subscriber count and newest event id."""
        return self.hub.describe()

    def rate_limiter(self, name: str, per_minute: int, burst: int) -> RateLimiter:
        """This worker's own buckets."""
        return RateLimiter(per_minute, burst)

    def status(self) -> dict[str, Any]:
        """This worker's memory: always there."""
        return {"backend": "memory", "ok": True}

    def buffered_bytes(self) -> tuple[int, int]:
        """(bytes the budget counts now, its limit)."""
        return self.budget.used, self.budget.limit


    # Fleets (issue 20): this host alone, runs in this worker.

    def list_hosts(self) -> list[dict[str, Any]] | None:
        """None: no registry, the caller describes this host."""
        return None

    def save_run(self, run_id: str, record: dict[str, Any], ttl: float) -> None:
        """Keep the record in this worker (the newest runs only)."""
        self.runs.save(run_id, record)

    def load_run(self, run_id: str) -> dict[str, Any] | None:
        """A run this worker keeps."""
        return self.runs.records.get(run_id)

    def list_runs(self, limit: int, user: str | None = None) -> list[dict[str, Any]]:
        """The newest runs this worker keeps."""
        return self.runs.newest(limit, user)

    def run_changed(self, run_id: str) -> Event:
        """Set by the run's next save_run (its coordinator runs in this worker)."""
        return self.runs.changes.event(run_id)

    def job_ended(self, job_id: str) -> Event:
        """Set by the job's finish_job (every job runs in this worker)."""
        return self.job_ends.event(job_id)

    def request_run_cancel(self, run_id: str) -> None:
        """Flag it for its coordinator, which runs in this worker."""
        self.runs.cancels.add(run_id)

    def run_cancel_requested(self, run_id: str) -> bool:
        """Whether the run was cancelled."""
        return run_id in self.runs.cancels

    def start_on_host(self, host: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """No other host shares this store: it cannot be asked."""
        return {"unreachable": f"host {host} shares no store with this one"}

    def set_run_start_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Nothing to route: the coordinator starts this host's jobs itself."""

    def claim_run_start(self, run_id: str, host: str) -> dict[str, Any] | None:
        """Once per run and host, in this worker."""
        return self.runs.claim_start(run_id, host)

    def record_run_start(self, run_id: str, host: str, answer: dict[str, Any] | None) -> None:
        """The answer of the one start (None: none was made)."""
        self.runs.record_start(run_id, host, answer)

    def run_taken_over(self, run_id: str, host: str, worker: int) -> bool:
        """Never: nobody else could take it."""
        return False

    def set_run_adopter(self, adopter: Callable[[dict[str, Any]], None]) -> None:
        """Nothing to adopt: a run dies with the worker that keeps it."""


def _same_epoch(log: EventLog, after: Position | int) -> bool:
    """Whether ``after`` is a position in the log's epoch (the start is in every epoch)."""
    epoch, offset = ("", after) if after.__class__ is int else after
    return epoch == log.epoch or not (epoch or offset)
