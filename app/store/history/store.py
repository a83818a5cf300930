"""HistoryStore: the memory store, with every job's record and output also kept on disk.

Running jobs and channels live in memory exactly as in ``MemoryStore``: that
is what streams read live. Every event appended to a job's log and every
change to its record is also handed to the writer thread (writer.py), which
appends it to the job's events file and its row in the database. Once a
finished job is wholly on disk it leaves memory: its record and its events are
read back from disk (in a small thread pool, so the hub never waits for the
disk), a bounded batch at a time. Ids, frames and bytes read back are those
that went out live.

Jobs of other workers sharing the data directory are visible through the
database; their output is followed by polling the file.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

import gevent
from gevent.event import Event
from gevent.threadpool import ThreadPool

from ...config import Settings
from ...states import FINAL_STATES
from ..base import (
    CHANNEL_PREFIX,
    JOB_PREFIX,
    TERMINAL_EVENTS,
    LogEvent,
    LogListener,
    LogRead,
    Position,
    UnknownLog,
    job_key,
)
from ..jobs import Job
from ..memory import MemoryStore
from ..query import JobPage, JobQuery, encode_cursor, matches
from . import database, records
from .datadir import DATABASE, JOBS_DIR, prepare_data_dir
from .writer import HistoryWriter

FINAL_STATE_NAMES = frozenset(state.value for state in FINAL_STATES)

log = logging.getLogger(__name__)

FOLLOW_POLL = 0.25  # seconds between looks at a job running in another worker
WARN_EVERY = 60.0
PRUNE_EVERY = 30.0  # seconds between retention passes when no job has finished
MAX_READ_BYTES = 4 << 20  # one read from disk holds at most about this much output
# Output released from memory (finished jobs now on disk) beyond which the C heap's free pages go back to the
# system. The worker keeps glibc's blocks of up to 4 MiB on its heap and trims the heap's top only past 64 MiB
# free (app/server/worker.py: a flood costs no page faults per event), so the freed output of finished jobs
# stayed resident: RSS climbed with each finished job to the heap's high-water mark.
TRIM_AFTER_BYTES = 4 << 20


def _malloc_trim() -> Any:
    """glibc's malloc_trim; None with another C library (musl gives freed pages back itself)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except OSError:
        return None


_MALLOC_TRIM = _malloc_trim()


class HistoryStore(MemoryStore):
    """Memory for what is live, disk for everything (the embedded default with ``history = true``)."""

    def __init__(self, settings: Settings, data_dir: str) -> None:
        MemoryStore.__init__(self, **MemoryStore.sizes(settings))
        # A finished job leaves memory once it is on disk, not by the memory store's count: forgotten before
        # its final record is written, it would be listed from the database as still running. This bound is
        # for a disk that cannot take the records at all.
        self.max_finished = 2 * settings.max_finished_jobs
        self.data_dir = prepare_data_dir(data_dir)
        self.jobs_dir = os.path.join(self.data_dir, JOBS_DIR)
        self.db_path = os.path.join(self.data_dir, DATABASE)
        interrupted = database.open_database(self.db_path, self.jobs_dir)
        if interrupted:
            log.warning("%d job(s) were running when the server stopped: now interrupted", len(interrupted))
        self.worker = database.this_worker()
        self.writer = HistoryWriter(self.db_path, self.jobs_dir, settings.history_queue_bytes, self.worker)
        self.writer.channel_keep = settings.channel_history
        self._restore_channels(settings.channel_history)
        self.writer.start()
        self._listener: LogListener | None = None
        MemoryStore.set_listener(self, self)  # every append passes through deliver() below
        self._pool = ThreadPool(1)
        self._read_conn: sqlite3.Connection | None = None
        self._warned_at = 0.0
        self._retention = (settings.max_finished_jobs, settings.finished_job_ttl, settings.history_max_bytes)
        self._pruned_at = 0.0
        self._released_bytes = 0  # output released from memory since the heap was last trimmed
        self._untrimmed = False  # whether any was released since the last quiet round's trim
        self._housekeeper = gevent.spawn(self._housekeeping)

    def _restore_channels(self, keep: int) -> None:
        """Channels come back with their epochs and newest messages: a resume after a restart carries on."""
        conn = database.connect(self.db_path)
        try:
            claimed = database.claim_channels(conn, self.worker, keep)
        finally:
            conn.close()
        for name, epoch, last_id, rows in claimed:
            events = [LogEvent(id_, kind, frame, data_start, b"", audience)
                      for id_, kind, frame, data_start, audience in rows]
            self.hub.restore(name, epoch, events, last_id)

    # What the memory store's logs tell (this store is their listener), passed on to the streams' listener.

    def deliver(self, key: str, event: LogEvent) -> None:
        """Queue a job's event for the disk, then deliver it live."""
        if key.startswith(JOB_PREFIX):
            self.writer.put_event(key[len(JOB_PREFIX):], event)
        elif key.startswith(CHANNEL_PREFIX):
            name = key[len(CHANNEL_PREFIX):]
            channel = self.hub.peek(name)
            if channel is not None:
                self.writer.put_channel_event(name, channel.epoch, event)
        if self._listener is not None:
            self._listener.deliver(key, event)

    def reset(self, key: str) -> None:
        """Pass a reset on."""
        if self._listener is not None:
            self._listener.reset(key)

    def set_listener(self, listener: LogListener) -> None:
        """The streams' listener: gets every event after it is queued for the disk."""
        self._listener = listener

    # The job registry: memory first, then the disk.

    def create_job(self, argv: Iterable[str], timeout: float, origin: str, **kwargs: Any) -> Job:
        """Register a new running job, in memory and on disk."""
        job = super().create_job(argv, timeout, origin, **kwargs)
        self._save(job)
        return job

    def mark_started(self, job_id: str, pid: int) -> None:
        """Record the pid and start time."""
        super().mark_started(job_id, pid)
        self._save(self._jobs[job_id])

    def mark_stopping(self, job_id: str) -> None:
        """A running job is being stopped."""
        super().mark_stopping(job_id)
        self._save(self._jobs[job_id])

    def finish_job(self, job_id: str, **fields: Any) -> Job:
        """Record how a job ended (also for a job already gone from memory to disk)."""
        if job_id in self._jobs:
            job = super().finish_job(job_id, **fields)
        else:
            job = self._stored_job(job_id)
            if job is None:
                raise KeyError(job_id)
            for name, value in fields.items():
                setattr(job, name, value)
        self._save(job)
        return job

    def _save(self, job: Job) -> None:
        self.writer.put_record(database.job_record(job))

    def get_job(self, job_id: str) -> Job | None:
        """A job by id, from memory while it is there, else from disk; None if neither has it."""
        job = super().get_job(job_id)
        return job if job is not None else self._stored_job(job_id)

    def _stored_job(self, job_id: str) -> Job | None:
        found = self._in_pool(database.fetch_job, job_id)
        if found is None or self._expired(found[0]):
            return None
        return found[0]

    def _expired(self, job: Job) -> bool:
        """Past finished_job_ttl: gone for readers at once, from the disk at the next retention pass."""
        return job.finished and time.time() - (job.ended_at or job.created_at) > self._retention[1]

    def list_jobs(self, *, state: str | None = None, owner: str | None = None) -> list[Job]:
        """Jobs in memory and on disk, newest first; only those in ``state``, or of ``owner``, if given."""
        live = {job.id: job for job in super().list_jobs(state=state, owner=owner)}
        stored = [job for job in self._in_pool(_select_jobs, state, owner) if not self._expired(job)]
        jobs = list(live.values()) + [job for job in stored if job.id not in live]
        return self._within_count(jobs)

    def find_jobs(self, query: JobQuery) -> JobPage:
        """GET /jobs's page in SQL (indexes on created_at and state), with the fresher records still in memory
        laid over the rows: the same answer as ``page_jobs`` over every job, without loading them all."""
        memory = [job for job in MemoryStore.list_jobs(self) if matches(job, query, with_state=False)]
        oldest = time.time() - self._retention[1]
        rows, counts, stored_states, cutoff = self._in_pool(
            _find_rows, query, oldest, self._retention[0], [job.id for job in memory])
        if cutoff is not None:  # beyond max_finished_jobs: retention is about to forget them
            memory = [job for job in memory if not job.finished or (job.ended_at or 0) > cutoff]
        for job in memory:
            stored = stored_states.get(job.id)
            if stored is not None:
                counts[stored] -= 1
            counts[job.state.value] = counts.get(job.state.value, 0) + 1
        candidates = {job.id: job for job in rows}
        for job in memory:
            if query.before is None or (job.created_at, job.id) < query.before:
                candidates[job.id] = job
            else:
                candidates.pop(job.id, None)
        found = [job for job in candidates.values() if query.state is None or job.state == query.state]
        found.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        counts = {state: count for state, count in counts.items() if count > 0}
        if query.limit is not None and len(found) > query.limit:
            found = found[: query.limit]
            return JobPage(found, encode_cursor(found[-1]), counts)
        return JobPage(found, None, counts)

    def _within_count(self, jobs: list[Job]) -> list[Job]:
        """Newest first, without the finished jobs beyond max_finished_jobs that retention is about to forget."""
        finished = sorted((job for job in jobs if job.finished), key=lambda job: job.ended_at or 0, reverse=True)
        beyond = {job.id for job in finished[self._retention[0]:]}
        jobs = [job for job in jobs if job.id not in beyond]
        jobs.sort(key=lambda job: job.created_at, reverse=True)
        return jobs

    # Reading logs: a job's from memory while it is there, else from disk.

    def read(self, key: str, after: Position | int, limit: int = 512, *, raw: bool = True) -> LogRead:
        """Up to ``limit`` events after ``after`` (from disk without their output bytes if not ``raw``)."""
        if not key.startswith(JOB_PREFIX) or key[len(JOB_PREFIX):] in self._logs:
            return super().read(key, after, limit)
        offset = after if after.__class__ is int else after[1]
        return self._in_pool(self._read_stored, key, key[len(JOB_PREFIX):], offset, limit, raw)

    def wait(self, key: str, after: Position | int, timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait for something after ``after``; a job on disk only is polled (another worker may run it)."""
        if not key.startswith(JOB_PREFIX) or key[len(JOB_PREFIX):] in self._logs:
            return super().wait(key, after, timeout, wake)
        return self._poll_stored([key], timeout, wake)

    def wait_any(self, afters: Mapping[str, Position | int], timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait until any log has something after its position; jobs on disk only are polled."""
        stored = [key for key in afters if key.startswith(JOB_PREFIX) and key[len(JOB_PREFIX):] not in self._logs]
        if not stored:
            return super().wait_any(afters, timeout, wake)
        return self._poll_stored(stored, timeout, wake)

    def _poll_stored(self, keys: list[str], timeout: float, wake: Iterable[Event]) -> bool:
        for key in keys:
            job = self.get_job(key[len(JOB_PREFIX):])
            if job is None or job.finished:
                return True
        gevent.wait(list(wake), timeout=min(timeout, FOLLOW_POLL), count=1)
        return True

    def _read_stored(self, conn: sqlite3.Connection, key: str, job_id: str, after: int, limit: int, raw: bool
                     ) -> LogRead:
        """In the pool's thread: events after ``after`` from the job's file."""
        found = database.fetch_job(conn, job_id)
        if found is None:
            raise UnknownLog(key)
        job, last_id, _ = found
        path = records.events_path(self.jobs_dir, job_id)
        index = records.load_index(records.index_path(self.jobs_dir, job_id))
        try:
            fh = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return LogRead(events=[], missed=0, finished=job.finished, last_id=last_id)
        with fh:
            size = os.fstat(fh.fileno()).st_size
            offset = records.seek_offset(index, after)
            scan = records.read_records(fh, offset if offset < size else 0, after=after, limit=limit,
                                        max_bytes=MAX_READ_BYTES, raw=raw)
        if scan.damaged and job.finished and not job.damaged:
            # A finished job's file is complete: a torn or garbled record is damage (a crash, a hand edit).
            _mark_damaged(conn, job_id)
        missed, stored = _first_gap(after, scan.events)
        events = [LogEvent(e.id, e.kind, e.frame, e.data_start, e.raw) for e in stored]
        at_end = len(events) == len(scan.events) and (scan.end >= size or scan.damaged)
        ended = bool(events) and events[-1].kind in TERMINAL_EVENTS
        return LogRead(
            events=events,
            missed=missed,
            finished=job.finished and (ended or (at_end and len(scan.events) < limit)),
            last_id=max(last_id, events[-1].id if events else 0),
        )

    # The disk, through one thread of a pool: the hub goes on while it waits.

    def _in_pool(self, function, *args):
        return self._pool.apply(self._with_conn, (function, *args))

    def _with_conn(self, function, *args):
        if self._read_conn is None:
            self._read_conn = database.connect(self.db_path)
        return function(self._read_conn, *args)

    # Housekeeping.

    def _housekeeping(self) -> None:
        while True:
            gevent.sleep(0.5)
            try:
                released = self._release_persisted()
                now = time.monotonic()
                if (released and now - self._pruned_at >= 1.0) or now - self._pruned_at >= PRUNE_EVERY:
                    self._pruned_at = now
                    self.prune_history()
                self._warn_if_degraded()
            except Exception:
                log.exception("history housekeeping failed")

    def _release_persisted(self) -> int:
        """Finished jobs wholly on disk leave memory (their readers carry on from disk); how many did."""
        persisted = self.writer.persisted
        released = released_bytes = 0
        while persisted:
            job = self._jobs.get(persisted.popleft())
            if job is not None and job.finished:
                released_bytes += self._logs[job.id].retained_bytes
                self._forget(job)
                released += 1
        # Trimmed after every few MiB released while finished jobs keep coming, and once they stop (the first
        # quiet round: by then the writer has let go of its last batch too).
        if released:
            self._released_bytes += released_bytes
            self._untrimmed = True
            if self._released_bytes >= TRIM_AFTER_BYTES:
                self._released_bytes = 0
                self._trim_heap()
        elif self._untrimmed:
            self._released_bytes = 0
            self._untrimmed = False
            self._trim_heap()
        return released

    def _trim_heap(self) -> None:
        """Give the C heap's free pages back to the system (glibc's malloc_trim), in the pool's thread: ctypes
        lets go of the GIL, so the hub streams on while the heap is walked."""
        if _MALLOC_TRIM is not None:
            self._pool.spawn(_MALLOC_TRIM, 0)

    def prune_history(self, keep_recent: float = database.KEEP_RECENT) -> tuple[int, int]:
        """Retention on disk (max_finished_jobs, finished_job_ttl, history_max_bytes): (jobs forgotten, bytes)."""
        max_finished, ttl, max_bytes = self._retention
        return self._in_pool(lambda conn: database.prune(conn, self.jobs_dir, max_finished=max_finished, ttl=ttl,
                                                         max_bytes=max_bytes, keep_recent=keep_recent))

    def _warn_if_degraded(self) -> None:
        problem = self.health_problem()
        now = time.monotonic()
        if problem and now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("history is degraded: %s; %d output bytes not kept so far", problem, self.lost_bytes)

    @property
    def lost_bytes(self) -> int:
        """Output bytes that never reached the disk (queue full, disk full)."""
        return self.writer.lost_bytes + self.writer.failed_bytes

    def status(self) -> dict[str, Any]:
        """History on this host's disk: always answers (a full disk degrades it, see health_problem)."""
        return {"backend": "history", "ok": True}

    def health_problem(self) -> str | None:
        """Why history is degraded (within the last minute), or None."""
        writer = self.writer
        if writer.problem is not None and time.time() - writer.problem_at < WARN_EVERY:
            return writer.problem
        return None

    def flush(self, timeout: float) -> bool:
        """Wait (cooperatively) until everything queued is on disk; whether it all is."""
        deadline = time.monotonic() + timeout
        while not self.writer.idle:
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(0.02)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Write out what is queued and stop the writer thread (graceful shutdown)."""
        self.flush(timeout)
        self._housekeeper.kill(block=False)
        return self.writer.stop(timeout)


def _mark_damaged(conn: sqlite3.Connection, job_id: str) -> None:
    try:
        with database.write(conn):
            conn.execute("UPDATE jobs SET damaged = 1 WHERE id = ?", (job_id,))
    except sqlite3.Error:
        pass  # shown as damaged next time, when the database can be written again


def _find_rows(conn: sqlite3.Connection, query: JobQuery, oldest: float, max_finished: int, live_ids: list[str]
               ) -> tuple[list[Job], dict[str, int], dict[str, str], float | None]:
    """(the page's rows, one more than asked for, counts by state for the filter, the stored states of
    ``live_ids``, the end time at or before which finished jobs are beyond ``max_finished``).

    All from one read transaction: a job the writer commits between two of these reads would otherwise be
    missing from the counts yet found among the stored states, and so not counted at all.
    """
    conn.execute("BEGIN")
    try:
        return _find_rows_in_snapshot(conn, query, oldest, max_finished, live_ids)
    finally:
        conn.execute("COMMIT")  # a read transaction: ends the snapshot


def _find_rows_in_snapshot(conn: sqlite3.Connection, query: JobQuery, oldest: float, max_finished: int,
                           live_ids: list[str]) -> tuple[list[Job], dict[str, int], dict[str, str], float | None]:
    final = tuple(FINAL_STATE_NAMES)
    beyond = conn.execute(
        f"SELECT ended_at FROM jobs WHERE state IN ({','.join('?' * len(final))}) ORDER BY ended_at DESC"
        " LIMIT 1 OFFSET ?", [*final, max_finished],
    ).fetchone()
    cutoff = beyond[0] if beyond else None
    filters = [
        ("(ended_at IS NULL OR ended_at >= ?)", oldest),
        ("(ended_at IS NULL OR ended_at > ?)", cutoff),
        ("owner = ?", query.owner),
        ("created_at >= ?", query.since),
        ("created_at < ?", query.until),
        ("instr(lower(search), lower(?)) > 0", query.q),
    ]
    clauses = [clause for clause, value in filters if value is not None]
    args: list[Any] = [value for _, value in filters if value is not None]
    where = " AND ".join(clauses)
    counts = dict(conn.execute(f"SELECT state, count(*) FROM jobs WHERE {where} GROUP BY state", args).fetchall())
    page_clauses, page_args = list(clauses), list(args)
    if query.state is not None:
        page_clauses.append("state = ?")
        page_args.append(query.state)
    if query.before is not None:
        page_clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
        page_args += [query.before[0], query.before[0], query.before[1]]
    limit = -1 if query.limit is None else query.limit + 1
    rows = conn.execute(
        f"SELECT record, damaged FROM jobs WHERE {' AND '.join(page_clauses)}"
        " ORDER BY created_at DESC, id DESC LIMIT ?", [*page_args, limit],
    ).fetchall()
    states: dict[str, str] = {}
    for start in range(0, len(live_ids), 500):
        chunk = live_ids[start:start + 500]
        states.update(conn.execute(
            f"SELECT id, state FROM jobs WHERE {where} AND id IN ({','.join('?' * len(chunk))})", [*args, *chunk]
        ).fetchall())
    return [database.job_from_record(text, bool(damaged)) for text, damaged in rows], counts, states, cutoff


def _select_jobs(conn: sqlite3.Connection, state: str | None, owner: str | None) -> list[Job]:
    clauses, args = [], []
    if state is not None:
        clauses.append("state = ?")
        args.append(state)
    if owner is not None:
        clauses.append("owner = ?")
        args.append(owner)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT record, damaged FROM jobs{where} ORDER BY created_at DESC, id DESC", args)
    return [database.job_from_record(text, bool(damaged)) for text, damaged in rows]


def _first_gap(after: int, events: list[records.StoredEvent]) -> tuple[int, list[records.StoredEvent]]:
    """(output bytes missing before the first event, the events up to the next gap): one gap per read."""
    missed = 0
    previous = after
    for at, event in enumerate(events):
        units = event.size or 1
        hole = event.id - units - previous
        if hole > 0:
            if at:
                return missed, events[:at]
            missed = hole
        previous = event.id
    return missed, events


__all__ = ["HistoryStore", "job_key"]
