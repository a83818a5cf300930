"""The history database: one SQLite file (WAL) of job records, shared by every worker of a host. No gevent.

Each worker writes its own jobs (through its writer thread, writer.py); the
master and the CLI open it too. Writes are ``BEGIN IMMEDIATE`` transactions
under a busy timeout, so that several processes queue for the one write lock
instead of failing; readers never block the writer (WAL).

A job's row keeps the columns that lists filter and sort by, and the whole
record (app/store/jobs.py's ``Job``) as JSON. ``worker_pid`` and
``worker_start`` (the pid's start time in clock ticks since boot, from
/proc) say which process runs a job that is still ``running``: if that
process is gone, the job was interrupted (``interrupt_orphans``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import time
from typing import Any

from ...policy.commandline import display_command
from ...states import FINAL_STATES, LIVE_STATES, ExitReason, JobState
from ..jobs import Job
from . import records
from .datadir import DataDirError

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL,
    search TEXT NOT NULL,
    worker_pid INTEGER,
    worker_start TEXT,
    last_id INTEGER NOT NULL DEFAULT 0,
    disk_bytes INTEGER NOT NULL DEFAULT 0,
    damaged INTEGER NOT NULL DEFAULT 0,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_by_ended ON jobs (ended_at);
CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last_id INTEGER NOT NULL,
    worker_pid INTEGER,
    worker_start TEXT
);
CREATE TABLE IF NOT EXISTS channel_events (
    name TEXT NOT NULL,
    epoch TEXT NOT NULL,
    id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    frame BLOB NOT NULL,
    data_start INTEGER NOT NULL,
    audience TEXT,
    PRIMARY KEY (name, epoch, id)
) WITHOUT ROWID;
"""

_LIVE = tuple(state.value for state in LIVE_STATES)
_FINAL = frozenset(state.value for state in FINAL_STATES)


def connect(path: str) -> sqlite3.Connection:
    """A connection in WAL mode with a busy timeout; writes go in ``with write(conn):`` blocks."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    return conn


# What says the database file itself is damaged (garbage, a torn header), as opposed to the disk or the
# system refusing it (full, read-only, an I/O error), which moving the file aside would not mend.
DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def open_database(db_path: str, jobs_dir: str) -> list[str]:
    """Open (or make) the database and interrupt orphaned jobs; the ids interrupted.

    A database SQLite cannot read (garbage, a torn header) is moved aside, named in the log, and a new one
    begun: the server starts and keeps serving; the jobs' output files stay where they are. Any other
    failure (a full disk, a read-only one) is a DataDirError, with the free space: the database is left as
    it is, and the server refuses to start with that reason.
    """
    for attempt in (1, 2):
        conn = None
        try:
            conn = connect(db_path)
            create_schema(conn)
            return interrupt_orphans(conn, jobs_dir)
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in DAMAGE_CODES:
                try:
                    free = f"{shutil.disk_usage(os.path.dirname(db_path)).free} bytes free on its disk"
                except OSError as disk:
                    free = f"its disk: {disk.strerror}"
                raise DataDirError(f"the history database {db_path} cannot be opened ({exc}; {free}); "
                                   "with history = false the server runs without it") from None
            if attempt == 2:
                raise
            aside = f"{db_path}.damaged-{int(time.time())}"
            log.error("the history database %s cannot be read (%s): moved to %s; starting a new one",
                      db_path, exc, aside)
            if conn is not None:
                conn.close()
                conn = None
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db_path + suffix):
                    os.replace(db_path + suffix, aside + suffix)
        finally:
            if conn is not None:
                conn.close()
    return []


class write:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error): one writer at a time, queued by the timeout."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def create_schema(conn: sqlite3.Connection) -> None:
    """Make the tables and indexes if missing."""
    conn.executescript(SCHEMA)


_JOB_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(Job))
_JOB_FIELDS = frozenset(_JOB_FIELD_NAMES)


def job_record(job: Job) -> dict[str, Any]:
    """A job's fields as JSON-ready values (what the row's ``record`` holds)."""
    record = {name: getattr(job, name) for name in _JOB_FIELD_NAMES}  # shallow: asdict's deep copy costs
    record["argv"] = list(job.argv)
    record["state"] = job.state.value
    return record




def job_from_record(text: str, damaged: bool = False) -> Job:
    """A Job from its stored record (fields this version does not know are ignored)."""
    record = {name: value for name, value in json.loads(text).items() if name in _JOB_FIELDS}
    record["argv"] = tuple(record.get("argv", ()))
    record["state"] = JobState(record["state"])
    job = Job(**record)
    job.damaged = job.damaged or damaged
    return job


def upsert_job(conn: sqlite3.Connection, record: dict[str, Any], worker: tuple[int, str], last_id: int,
               disk_bytes: int) -> None:
    """Insert or replace one job's row (inside a write transaction)."""
    search = display_command(record["argv"]) + ("\n" + record["action"] if record.get("action") else "")
    conn.execute(
        "INSERT INTO jobs (id, owner, state, created_at, ended_at, search, worker_pid, worker_start, last_id,"
        " disk_bytes, damaged, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at,"
        " last_id = max(last_id, excluded.last_id), disk_bytes = max(disk_bytes, excluded.disk_bytes),"
        " damaged = max(damaged, excluded.damaged), record = excluded.record",
        (record["id"], record["owner"], record["state"], record["created_at"], record["ended_at"], search,
         worker[0], worker[1], last_id, disk_bytes, int(bool(record.get("damaged"))), json.dumps(record)),
    )


def fetch_job(conn: sqlite3.Connection, job_id: str) -> tuple[Job, int, int] | None:
    """(the job, its last event id on disk, its bytes on disk), or None."""
    row = conn.execute("SELECT record, damaged, last_id, disk_bytes FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    return job_from_record(row[0], bool(row[1])), row[2], row[3]


def process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22), or None if it is gone
    (a zombie included)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None  # dead, not yet reaped (its parent died too, say): gone all the same
    return fields[19].decode()


def this_worker() -> tuple[int, str]:
    """(pid, start time) of this process, as its jobs' rows record it."""
    pid = os.getpid()
    return pid, process_start(pid) or ""


def interrupt_orphans(conn: sqlite3.Connection, jobs_dir: str) -> list[str]:
    """Jobs recorded as running by a process that is gone become ``interrupted``; their ids.

    Each gets a final ``exit`` event (reason ``interrupted``) after the last good record of its
    output; a torn or garbled tail is cut off first and the job marked damaged.
    """
    from ...streaming.sse import encode_json_frame

    interrupted = []
    with write(conn):
        live = ",".join("?" * len(_LIVE))
        rows = conn.execute(
            f"SELECT id, worker_pid, worker_start, record, damaged FROM jobs WHERE state IN ({live})", _LIVE
        ).fetchall()
        for job_id, pid, started, text, damaged in rows:
            if pid is not None and process_start(pid) == started:
                continue  # its worker is alive and still runs it
            job = job_from_record(text, bool(damaged))
            last_id, size, torn, output_bytes = _seal(jobs_dir, job_id)
            now = time.time()
            payload = {"type": "exit", "reason": ExitReason.INTERRUPTED.value, "code": None, "signal": None,
                       "signal_name": None, "duration": None, "cpu_seconds": None, "peak_memory_bytes": None,
                       "error": "the server stopped while it ran"}
            frame, data_start = encode_json_frame(payload, "exit", last_id + 1)
            written = _append(jobs_dir, job_id, records.encode_record(last_id + 1, "exit", frame, data_start, b""))
            job.state = JobState.INTERRUPTED
            job.reason = ExitReason.INTERRUPTED.value
            job.error = payload["error"]
            job.ended_at = now
            job.output_bytes = max(job.output_bytes, output_bytes)
            job.damaged = job.damaged or torn
            upsert_job(conn, job_record(job), (pid, started), last_id + (1 if written else 0), size + written)
            interrupted.append(job_id)
    return interrupted


def _seal(jobs_dir: str, job_id: str) -> tuple[int, int, bool, int]:
    """(last good event id, file size after cutting a torn tail, whether it was torn, output bytes)."""
    path = records.events_path(jobs_dir, job_id)
    if not os.path.exists(path):
        return 0, 0, False, 0
    index = records.load_index(records.index_path(jobs_dir, job_id))
    last, end, torn, _ = records.last_good(path, index)
    if torn:
        os.truncate(path, end)
    output = 0
    with open(path, "rb") as fh:
        for event in records.iter_records(fh, raw=False):
            output += event.size
    return (last.id if last else 0), end, torn, output


def _append(jobs_dir: str, job_id: str, record: bytes) -> int:
    path = records.events_path(jobs_dir, job_id)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, record)
        finally:
            os.close(fd)
    except OSError:
        return 0
    return len(record)


def save_channel_events(conn: sqlite3.Connection, events: list[tuple[str, str, Any]], worker: tuple[int, str],
                        keep: int) -> None:
    """Append channel messages ``(name, epoch, LogEvent)`` and keep each channel's newest ``keep`` (in a write
    transaction). A channel's row names its current epoch and the worker writing it; older epochs go."""
    newest: dict[str, tuple[str, int]] = {}
    conn.executemany(
        "INSERT OR REPLACE INTO channel_events (name, epoch, id, kind, frame, data_start, audience)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(name, epoch, e.id, e.kind, e.frame, e.data_start, e.audience) for name, epoch, e in events],
    )
    for name, epoch, event in events:
        newest[name] = (epoch, event.id)
    for name, (epoch, last_id) in newest.items():
        conn.execute(
            "INSERT INTO channels (name, epoch, last_id, worker_pid, worker_start) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch, last_id = excluded.last_id,"
            " worker_pid = excluded.worker_pid, worker_start = excluded.worker_start",
            (name, epoch, last_id, *worker),
        )
        conn.execute("DELETE FROM channel_events WHERE name = ? AND (epoch != ? OR id <= ?)",
                     (name, epoch, last_id - keep))


def claim_channels(conn: sqlite3.Connection, worker: tuple[int, str], keep: int) -> list[tuple[str, str, int, list]]:
    """The channels no live worker writes, claimed for this one: (name, epoch, last id, newest ``keep`` rows
    of (id, kind, frame, data_start, audience), oldest first)."""
    claimed = []
    with write(conn):
        for name, epoch, last_id, pid, started in conn.execute(
            "SELECT name, epoch, last_id, worker_pid, worker_start FROM channels"
        ).fetchall():
            if (pid, started) != worker and pid is not None and process_start(pid) == started:
                continue  # another live worker writes this history
            conn.execute("UPDATE channels SET worker_pid = ?, worker_start = ? WHERE name = ?", (*worker, name))
            rows = conn.execute(
                "SELECT id, kind, frame, data_start, audience FROM channel_events WHERE name = ? AND epoch = ?"
                " ORDER BY id DESC LIMIT ?", (name, epoch, keep),
            ).fetchall()
            claimed.append((name, epoch, last_id, rows[::-1]))
    return claimed


# A job just ended may be over history_max_bytes by itself (a flood) and still be read: by viewers draining
# what was in flight, by whoever ran it. Retention by bytes leaves it this long, as it leaves running jobs.
KEEP_RECENT = 60.0


def prune(conn: sqlite3.Connection, jobs_dir: str, *, max_finished: int, ttl: float, max_bytes: int,
          now: float | None = None, keep_recent: float = KEEP_RECENT) -> tuple[int, int]:
    """Forget finished jobs, oldest first: beyond ``max_finished``, ended more than ``ttl`` seconds ago, and while
    every job's output together takes more than ``max_bytes`` on disk. (jobs forgotten, bytes freed).

    Rows go first, in one transaction; then their files. Running jobs are never touched, nor, for bytes, a job
    that ended less than ``keep_recent`` seconds ago.
    """
    now = time.time() if now is None else now
    final = tuple(_FINAL)
    marks = ",".join("?" * len(final))
    with write(conn):
        finished = conn.execute(f"SELECT count(*) FROM jobs WHERE state IN ({marks})", final).fetchone()[0]
        total = conn.execute("SELECT coalesce(sum(disk_bytes), 0) FROM jobs").fetchone()[0]
        excess = finished - max_finished
        doomed = []
        # Read lazily, oldest first, and only as far as there is something to forget.
        rows = conn.execute(
            f"SELECT id, ended_at, disk_bytes FROM jobs WHERE state IN ({marks}) ORDER BY ended_at, id", final
        )
        for job_id, ended_at, disk_bytes in rows:
            ended_at = ended_at or now
            if excess <= 0 and ended_at >= now - ttl and (total <= max_bytes or ended_at > now - keep_recent):
                break  # (in order of their end: every job after this one is as recent)
            doomed.append((job_id, disk_bytes))
            excess -= 1
            total -= disk_bytes
        rows.close()
        conn.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id, _ in doomed])
    freed = 0
    for job_id, _ in doomed:
        for path in (records.events_path(jobs_dir, job_id), records.index_path(jobs_dir, job_id)):
            try:
                freed += os.path.getsize(path)
                os.unlink(path)
            except FileNotFoundError:
                pass
    return len(doomed), freed


def is_final(state: str) -> bool:
    """Whether a stored state is final."""
    return state in _FINAL
