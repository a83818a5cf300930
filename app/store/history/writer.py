"""The history writer: one real OS thread per worker that puts jobs' events and records on disk.

sqlite3 and file writes block whatever thread runs them, and under gevent a
monkey-patched ``threading.Thread`` is a greenlet on the hub: it would stall
every stream. So the writer is a native thread (``gevent.monkey.get_original``),
fed through a deque (appends are atomic under the GIL) and woken through a
native lock. Greenlets never wait for it:

- output events are bounded by ``max_queue_bytes``, counted as the bytes the
  disk will get (the frame, and the raw bytes only when they are not the
  frame's text): the queue holds those and nothing else of the event, so the
  bound is also the memory it keeps once the job's log has let the event go.
  When the disk falls that far behind, further output is not queued and its
  bytes are counted as lost (``lost_bytes``); streaming never slows down. A
  job's start and final events are always queued;
- job records are small and never dropped: the newest record of each job
  replaces an older one still waiting (``pending``), and a record that cannot
  be written (a full disk) is tried again.

The thread never logs (logging's locks are gevent's after patching); it sets
``problem`` and counters, which the store's housekeeping greenlet reports.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import sqlite3
import time
from typing import Any

from gevent import monkey

from . import database, records

_start_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")
_thread_sleep = monkey.get_original("time", "sleep")

BATCH_BYTES = 4 << 20
ROUND = 0.02  # seconds the writer gathers events before writing them
MAX_ROUND = 0.32  # the longest it sleeps while idle
# A running job's row follows its file's growth (for retention by bytes) at most this often in a commit of its
# own: a flood would otherwise cost a transaction per round. Readers read the file itself, not up to the row.
GROWN_EVERY = 0.5
WAKE_BYTES = 1 << 20  # queued beyond this, the writer is woken at once
BATCH_ITEMS = 4096
# A running job's output kept in the page cache behind its file's end; older output is written back and dropped.
DROP_BEHIND = 8 << 20
_fadvise = getattr(os, "posix_fadvise", None)  # Linux and most Unixes; elsewhere the kernel decides alone
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16  # parts per os.writev


class _JobFile:
    """A running job's open events file."""

    __slots__ = ("advised", "dropped", "ended", "fd", "index_fd", "last_id", "next_mark", "recorded_size", "size")

    def __init__(self, fd: int, index_fd: int, size: int) -> None:
        self.fd = fd
        self.index_fd = index_fd
        self.size = size
        # The page cache behind the file's end: its writeback started before ``advised``, let go of before
        # ``dropped``. (What the file held before it was opened is left alone.)
        self.advised = self.dropped = size
        self.next_mark = size + records.INDEX_EVERY  # reading from the start needs no index entry
        self.last_id = 0
        self.ended = False  # the job's final event is on disk
        self.recorded_size = size  # the size its row says (updated each round while it grows)


class _Chunk:
    """What one batch appends to one job's file."""

    __slots__ = ("ended", "last_id", "marks", "next_mark", "parts", "position", "raw")

    def __init__(self, position: int, next_mark: int) -> None:
        self.position = position
        self.next_mark = next_mark
        self.parts: list[bytes] = []
        self.marks: list[bytes] = []
        self.raw = 0
        self.last_id = 0
        self.ended = False


class HistoryWriter:
    """The writer thread and its bounded queue."""

    def __init__(self, db_path: str, jobs_dir: str, max_queue_bytes: int, worker: tuple[int, str]) -> None:
        self.db_path = db_path
        self.jobs_dir = jobs_dir
        self.max_queue_bytes = max_queue_bytes
        self.worker = worker
        self._queue: collections.deque = collections.deque()
        self._wake = _allocate_lock()
        self._wake.acquire()
        self.queued_bytes = 0  # only the producer (the hub's thread) adds to this
        self.written_bytes = 0  # only the writer thread adds to this
        self.queued_items = 0
        self.done_items = 0
        self.lost_by_job: dict[str, int] = {}  # output bytes never queued (producer side)
        self.failed_by_job: dict[str, int] = {}  # output bytes the disk refused (writer side)
        self.lost_bytes = 0  # producer side total
        self.lost_messages = 0  # channel messages never queued
        self.channel_keep = 1000  # messages kept per channel (the store sets channel_history)
        self.failed_bytes = 0  # writer side total
        self.problem: str | None = None  # the latest reason history was incomplete
        self.problem_at = 0.0  # when that last happened (health says degraded for a minute after)
        self.persisted: collections.deque[str] = collections.deque()  # finished jobs now wholly on disk
        self._files: dict[str, _JobFile] = {}
        self._dirs: set[str] = set()  # fan-out directories known to exist
        self._pending: dict[str, dict[str, Any]] = {}  # job id -> its newest record, not yet committed
        self._channel_events: list[tuple[str, str, Any]] = []  # (name, epoch, event) not yet committed
        self._skipping: set[str] = set()  # jobs whose events are being dropped (queue full)
        self._stopping = False
        self._stopped = _allocate_lock()
        self._stopped.acquire()

    def start(self) -> None:
        """Start the thread."""
        _start_thread(self._run, ())

    # Producer side (greenlets): never blocks.

    def put_event(self, job_id: str, event) -> None:
        """Queue one event of a job, or count its output as lost if the queue is full."""
        raw = event.raw
        text = event.ascii_out or records.is_text(event.kind, event.frame, raw)
        size = len(event.frame) + (0 if text else len(raw)) + 64
        # Only output is ever dropped: the start and final events are small, and a history needs them.
        if raw and self.queued_bytes - self.written_bytes + size > self.max_queue_bytes:
            self.lost_by_job[job_id] = self.lost_by_job.get(job_id, 0) + len(raw)
            self.lost_bytes += len(raw)
            self._fail("the disk is slower than the output: history falls behind (bytes lost)")
            return
        self.queued_bytes += size
        # What the record needs, not the event: a text record's raw bytes may go as soon as the log drops them.
        self._put(("event", job_id, (event.id, event.kind, event.frame, event.data_start,
                                     b"" if text else raw, len(raw), text), size))

    def put_channel_event(self, name: str, epoch: str, event) -> None:
        """Queue one channel message, or count it lost if the queue is full."""
        size = len(event.frame) + 64
        if self.queued_bytes - self.written_bytes + size > self.max_queue_bytes:
            self.lost_messages += 1
            self._fail("the disk is slower than the channels: channel history falls behind (messages lost)")
            return
        self.queued_bytes += size
        self._put(("channel", name, (epoch, event), size))

    def put_record(self, record: dict[str, Any]) -> None:
        """Queue a job's record (its newest state); never dropped."""
        self._put(("record", record["id"], record, 0))

    def _put(self, item: tuple) -> None:
        self.queued_items += 1
        self._queue.append(item)
        if self.queued_bytes - self.written_bytes > WAKE_BYTES:
            # Much to write: now, not at the writer's next round. Otherwise it gathers for a round
            # (a thread woken per event would take the GIL from the hub per event).
            try:  # noqa: SIM105 - on the output path: a plain try costs less than contextlib.suppress
                self._wake.release()
            except RuntimeError:
                pass  # already awake

    @property
    def idle(self) -> bool:
        """Whether everything queued so far has been handled."""
        return self.done_items >= self.queued_items and not self._pending and not self._channel_events

    def stop(self, timeout: float) -> bool:
        """Finish what is queued (up to ``timeout``), close everything; whether it all got written."""
        self._stopping = True
        with contextlib.suppress(RuntimeError):
            self._wake.release()
        return self._stopped.acquire(timeout=timeout)

    # The thread.

    def _run(self) -> None:
        conn = None
        interval = ROUND
        grown_due = 0.0
        try:
            while True:
                batch = self._take()
                if batch:
                    self._write_events(batch)
                if self._pending or self._channel_events or (time.monotonic() >= grown_due and self._grown()):
                    if conn is None:
                        conn = self._connect()
                    if conn is not None:
                        self._commit(conn)
                    grown_due = time.monotonic() + GROWN_EVERY
                taken = len(batch)
                # Let go of the batch's output before waiting: held through an idle wait, the last batch of a
                # finished job (up to BATCH_BYTES) would outlive the job's release from memory.
                batch = None
                self.done_items += taken
                if self._stopping and not self._queue:
                    if (self._pending or self._channel_events) and conn is not None:
                        self._commit(conn)
                    break
                # Gather for a round (longer while idle, never beyond MAX_ROUND: a kill -9 loses at most that),
                # unless woken for much output; a pending record (a full disk) is retried every round.
                interval = ROUND if taken else min(interval * 2, MAX_ROUND)
                if taken < BATCH_ITEMS:
                    self._wake.acquire(timeout=interval)
        finally:
            for job_id in list(self._files):
                self._close(job_id)
            if conn is not None:
                conn.close()
            self._stopped.release()

    def _connect(self) -> sqlite3.Connection | None:
        try:
            return database.connect(self.db_path)
        except sqlite3.Error as exc:
            self._fail(f"cannot open the history database: {exc}")
            return None

    def _take(self) -> list[tuple]:
        batch = []
        size = 0
        queue = self._queue
        while queue and len(batch) < BATCH_ITEMS and size < BATCH_BYTES:
            item = queue.popleft()
            batch.append(item)
            size += item[3]
        return batch

    def _write_events(self, batch: list[tuple]) -> None:
        chunks: dict[str, _Chunk] = {}
        for kind, job_id, payload, _size in batch:
            if kind == "record":
                self._pending[job_id] = payload
                continue
            if kind == "channel":
                if len(self._channel_events) < 100_000:  # a database that cannot be written: keep trying, bounded
                    self._channel_events.append((job_id, *payload))
                continue
            self._append(job_id, payload, chunks)
        for job_id, chunk in chunks.items():
            self._flush(job_id, chunk)
            if chunk.ended:
                self._close(job_id)
        self.written_bytes += sum(item[3] for item in batch)

    def _file(self, job_id: str) -> _JobFile | None:
        job_file = self._files.get(job_id)
        if job_file is None:
            path = records.events_path(self.jobs_dir, job_id)
            try:
                directory = os.path.dirname(path)
                if directory not in self._dirs:
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                    self._dirs.add(directory)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self._fail(_disk_problem(exc, self.jobs_dir))
                return None
            job_file = self._files[job_id] = _JobFile(fd, -1, os.fstat(fd).st_size)
        return job_file

    def _append(self, job_id: str, event: tuple, chunks: dict[str, _Chunk]) -> None:
        """Add one record to the job's chunk for this batch, indexing it if it starts a new stretch."""
        event_id, kind, frame, data_start, raw, raw_len, text = event
        job_file = self._file(job_id)
        if job_file is None or job_file.fd < 0:
            self._count_failed(job_id, raw_len)
            return
        chunk = chunks.get(job_id)
        if chunk is None:
            chunk = chunks[job_id] = _Chunk(job_file.size, job_file.next_mark)
        head = records.record_head(event_id, kind, frame, data_start, raw, raw_len, text)
        if chunk.position >= chunk.next_mark:
            chunk.marks.append(records.INDEX_ENTRY.pack(event_id, chunk.position))
            chunk.next_mark = chunk.position + records.INDEX_EVERY
        parts = chunk.parts
        parts.append(head)
        parts.append(frame)
        chunk.position += len(head) + len(frame)
        if raw:
            parts.append(raw)
            chunk.position += len(raw)
        chunk.raw += raw_len
        chunk.last_id = event_id
        chunk.ended = kind in ("exit", "err")

    def _flush(self, job_id: str, chunk: _Chunk) -> None:
        job_file = self._files[job_id]
        try:
            _write_all(job_file.fd, chunk.parts)
        except OSError as exc:
            # Cut off what got half written, so the file holds whole records only; count what was lost.
            with contextlib.suppress(OSError):
                os.ftruncate(job_file.fd, job_file.size)
            self._count_failed(job_id, chunk.raw)
            self._fail(_disk_problem(exc, self.jobs_dir))
            return
        if chunk.marks:
            with contextlib.suppress(OSError):  # a missing index entry costs a longer scan, nothing else
                if job_file.index_fd < 0:  # made only for jobs that need one: a short job has one file
                    job_file.index_fd = os.open(records.index_path(self.jobs_dir, job_id),
                                                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.write(job_file.index_fd, b"".join(chunk.marks))
        job_file.size = chunk.position
        job_file.next_mark = chunk.next_mark
        job_file.last_id = chunk.last_id
        job_file.ended = job_file.ended or chunk.ended
        if job_file.size - job_file.advised >= 2 * DROP_BEHIND:
            _drop_behind(job_file, job_file.size - DROP_BEHIND)

    def _close(self, job_id: str) -> None:
        job_file = self._files.get(job_id)
        if job_file is None:
            return
        if job_file.fd >= 0 and job_file.size - job_file.dropped >= DROP_BEHIND:
            _drop_behind(job_file, job_file.size)
        job_file.fd = _close_fd(job_file.fd)
        job_file.index_fd = _close_fd(job_file.index_fd)

    def _count_failed(self, job_id: str, raw_bytes: int) -> None:
        self.failed_by_job[job_id] = self.failed_by_job.get(job_id, 0) + raw_bytes
        self.failed_bytes += raw_bytes

    def _fail(self, problem: str) -> None:
        self.problem = problem
        self.problem_at = time.time()

    def _grown(self) -> list[tuple[int, int, str]]:
        """(size, last id, job id) of running jobs' files grown since their rows last said."""
        return [(f.size, f.last_id, job_id) for job_id, f in self._files.items()
                if f.size != f.recorded_size and job_id not in self._pending]

    def _commit(self, conn: sqlite3.Connection) -> None:
        pending, self._pending = self._pending, {}
        channel_events, self._channel_events = self._channel_events, []
        grown = self._grown()
        try:
            with database.write(conn):
                if grown:  # what other workers following a running job, and retention by bytes, read
                    conn.executemany("UPDATE jobs SET disk_bytes = ?, last_id = max(last_id, ?) WHERE id = ?", grown)
                if channel_events:
                    database.save_channel_events(conn, channel_events, self.worker, self.channel_keep)
                for job_id, record in pending.items():
                    job_file = self._files.get(job_id)
                    lost = self.lost_by_job.get(job_id, 0) + self.failed_by_job.get(job_id, 0)
                    if lost or (job_file is not None and database.is_final(record["state"])):
                        # On disk, what is missing is what the disk never got (not what memory dropped).
                        record = {**record, "dropped_bytes": lost}
                    database.upsert_job(conn, record, self.worker, job_file.last_id if job_file else 0,
                                        job_file.size if job_file else 0)
        except sqlite3.Error as exc:
            for job_id, record in pending.items():
                self._pending.setdefault(job_id, record)
            self._channel_events[:0] = channel_events
            self._fail(f"cannot write the history database: {exc}")
            return
        for size, _, job_id in grown:
            self._files[job_id].recorded_size = size
        for job_id, record in pending.items():
            job_file = self._files.get(job_id)
            if job_file is not None:
                job_file.recorded_size = job_file.size
            if database.is_final(record["state"]):
                self._files.pop(job_id, None)
                lost = self.lost_by_job.pop(job_id, 0) + self.failed_by_job.pop(job_id, 0)
                # Only a whole file may stand in for memory: readers of a file that lacks output, or the final
                # event (a full disk), would never see the job end. Such a job stays in memory, bounded like
                # any other, until retention forgets it.
                if job_file is not None and job_file.ended and not lost:
                    self.persisted.append(job_id)


def _drop_behind(job_file: _JobFile, end: int) -> None:
    """Start writing back a job file's output before ``end`` and let go of what is already on disk.

    A job's history is written once and rarely read, so it should not fill the page cache: a flood would
    otherwise take a new page for every 4 KiB it writes (a page the kernel must find, on a busy host by
    reclaiming other files' cache; bench/OPTIMISATIONS.md measures what that costs the writer) and build up
    dirty pages that throttle the writer all at once. Written back behind the writer, the same few pages
    are reused. The advice starts the writeback of dirty pages and drops clean ones, so each stretch gets it
    twice: the stretch advised last time (written back since) is dropped now, and the new one's writeback
    starts.
    """
    if _fadvise is None:
        return
    with contextlib.suppress(OSError):  # advice only: a filesystem that does not take it keeps its cache
        _fadvise(job_file.fd, job_file.dropped, end - job_file.dropped, os.POSIX_FADV_DONTNEED)
    job_file.dropped, job_file.advised = job_file.advised, end


def _close_fd(fd: int) -> int:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    return -1


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write the parts one after the other, gathered (os.writev: no joined copy), to the end even if cut short."""
    start = 0
    while start < len(parts):
        batch = parts[start : start + _IOV_MAX]
        written = os.writev(fd, batch)
        start += len(batch)
        wanted = sum(map(len, batch))
        if written < wanted:  # a short write: finish this batch's tail with plain writes
            rest = b"".join(batch)[written:]
            while rest:
                rest = rest[os.write(fd, rest):]


def _disk_problem(exc: OSError, where: str) -> str:
    if exc.errno == errno.ENOSPC:
        return f"the disk holding {where} is full: job output is not being kept (bytes lost)"
    return f"the disk refuses job output under {where}: {exc.strerror} (bytes lost)"
