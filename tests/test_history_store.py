"""HistoryStore in-process: replay from disk, the bounded queue, damage, the data directory (issue 17)."""

from __future__ import annotations

import codecs
import os
import sqlite3
import time

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.process.runner import OutputPump
from app.states import JobState
from app.store.base import LogEvent, Position, channel_key, job_key
from app.store.history import database, records
from app.store.history.datadir import DataDirError, prepare_data_dir
from app.store.history.store import HistoryStore


class Recorder:
    """The streams' listener: what went out live."""

    def __init__(self) -> None:
        self.frames: dict[str, list[bytes]] = {}
        self.raw: dict[str, bytes] = {}

    def deliver(self, key: str, event: LogEvent) -> None:
        self.frames.setdefault(key, []).append(event.frame)
        self.raw[key] = self.raw.get(key, b"") + event.raw

    def reset(self, key: str) -> None:
        pass


def _store(path, **changes) -> tuple[HistoryStore, Recorder]:
    store = HistoryStore(Settings(**changes), str(path))
    recorder = Recorder()
    store.set_listener(recorder)
    return store, recorder


def _run(store: HistoryStore, chunks: list[tuple[str, bytes]]) -> str:
    """A job whose command wrote ``chunks`` (as the runner's pump turns them into events), then exited."""
    job = store.create_job(["printf", "x"], 60, "jobs", owner="alice")
    store.mark_started(job.id, 4242)
    log = store.local_log(job.id)
    log.append("start", {"type": "start", "job": job.id, "pid": 4242, "argv": ["printf", "x"]})
    pump = OutputPump(log, Settings(), lambda: None)
    for name in ("stdout", "stderr"):
        pump.decoders[name] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pump.pending[name] = b""
    for name, data in chunks:
        pump._emit(name, data)
    for name in ("stdout", "stderr"):
        pump._emit(name, b"", final=True)
    log.append("exit", {"type": "exit", "reason": "exited", "code": 0})
    store.finish_job(job.id, state=JobState.EXITED, reason="exited", exit_code=0)
    return job.id


def _on_disk(store: HistoryStore, job_id: str) -> None:
    """Wait until the job is wholly on disk and out of memory."""
    assert store.flush(10)
    store._release_persisted()
    assert job_id not in store._logs


def _replay(store: HistoryStore, job_id: str, after: int = 0, limit: int = 7, *, with_raw: bool = True
            ) -> tuple[list[bytes], bytes, int]:
    frames, raw, missed = [], b"", 0
    while True:
        read = store.read(job_key(job_id), after, limit=limit, raw=with_raw)
        missed += read.missed
        frames += [event.frame for event in read.events]
        raw += b"".join(event.raw for event in read.events)
        if read.events:
            after = read.events[-1].id
        if read.finished:
            return frames, raw, missed
        assert read.events or read.missed


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    store, recorder = _store(tmp_path_factory.mktemp("history"))
    yield store, recorder
    store.close(5)


_chunk = st.tuples(st.sampled_from(["stdout", "stderr"]),
                   st.binary(min_size=1, max_size=40) | st.sampled_from([b"\r", b"\0", b"\xe2\x82", b"\xac", b"\r\n"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(_chunk, max_size=30))
def test_a_replay_from_disk_is_the_live_stream_byte_for_byte(shared, chunks):
    store, recorder = shared
    job_id = _run(store, chunks)
    live = recorder.frames[job_key(job_id)]
    _on_disk(store, job_id)
    frames, raw, missed = _replay(store, job_id)
    assert frames == live and missed == 0
    assert raw == recorder.raw[job_key(job_id)]
    assert sorted(raw) == sorted(b"".join(data for _, data in chunks))  # every byte (pipes interleave)
    assert _replay(store, job_id, with_raw=False) == (live, b"", 0)  # what SSE replays read: frames only
    # A resume from any id gives the rest of the same stream.
    ids = [read.id for read in store.read(job_key(job_id), 0, limit=10_000).events]
    middle = ids[len(ids) // 2]
    assert _replay(store, job_id, middle)[0] == live[len(ids) // 2 + 1:]


def test_the_record_survives_in_the_database_and_the_job_leaves_memory(shared):
    store, _ = shared
    job_id = _run(store, [("stdout", b"hello\n")])
    _on_disk(store, job_id)
    job = store.get_job(job_id)
    assert (job.state, job.owner, job.output_bytes, job.damaged) == (JobState.EXITED, "alice", 6, False)
    assert job_id in [listed.id for listed in store.list_jobs(owner="alice")]


def test_when_the_queue_is_full_history_falls_behind_and_counts_the_lost_bytes(tmp_path):
    store, recorder = _store(tmp_path / "data", history_queue_bytes=1)
    try:
        chunks = [("stdout", b"a" * 1000), ("stdout", b"b" * 500)]
        job_id = _run(store, chunks)
        assert len(recorder.frames[job_key(job_id)]) == 4  # the stream got everything, at once
        assert store.lost_bytes == 1500
        assert "falls behind" in store.health_problem()
        assert store.flush(10)
        store._release_persisted()
        # Not wholly on disk, so it stays in memory while memory has it, and its readers get all of it.
        assert job_id in store._logs
        assert _replay(store, job_id)[1:] == (b"a" * 1000 + b"b" * 500, 0)
        assert store._stored_job(job_id).dropped_bytes == 1500  # the record on disk says what the file lacks
        store._forget(store._jobs[job_id])  # as the memory store's retention does; from now on, the disk
        assert store.get_job(job_id).dropped_bytes == 1500
        frames, raw, missed = _replay(store, job_id)
        assert (raw, missed) == (b"", 1500)
        assert _replay(store, job_id, with_raw=False) == (frames, b"", 1500)
        assert frames[-1].startswith(b"id: 1502\nevent: exit")  # the final event is never dropped
    finally:
        store.close(5)


def test_the_queue_counts_what_the_disk_will_get_and_holds_no_raw_copy_of_ascii_output(tmp_path):
    from app.store.history.writer import HistoryWriter
    from app.streaming.sse import OutputJSON, encode_json_frame

    def event(event_id: int, raw: bytes) -> LogEvent:
        return LogEvent(event_id, "stdout", *encode_json_frame(OutputJSON("stdout", raw), "stdout", event_id), raw)

    ascii_event, other = event(1000, b"a" * 1000), event(2000, b"\xc3\xa9" * 500)
    # Room for the ASCII event's frame, not for its frame and its bytes: it is kept (its record stores the frame).
    writer = HistoryWriter(str(tmp_path / "db"), str(tmp_path), len(ascii_event.frame) + 64, (1, "x"))
    writer.put_event("j", ascii_event)
    assert writer.lost_bytes == 0 and writer.queued_bytes == len(ascii_event.frame) + 64
    assert writer._queue[-1][2][4] == b""  # the queue keeps the frame, not the raw bytes it can rebuild
    writer.put_event("j", other)  # not ASCII: frame and bytes are written, and counted; no room
    assert writer.lost_bytes == 1000


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_torn_or_garbled_file_marks_the_job_damaged_and_keeps_what_could_be_read(tmp_path, damage):
    store, _ = _store(tmp_path / "data")
    try:
        job_id = _run(store, [("stdout", b"kept\n"), ("stdout", b"lost\n")])
        _on_disk(store, job_id)
        path = records.events_path(store.jobs_dir, job_id)
        frames, _, _ = _replay(store, job_id)
        size = os.path.getsize(path)
        with open(path, "r+b") as fh:
            if damage == "truncate":
                fh.truncate(size - len(frames[-1]) - len(frames[-2]) + 3)  # into the "lost" record
            else:
                fh.seek(size - len(frames[-1]) - len(frames[-2]) - 40)
                fh.write(b"\xde\xad" * 100)
        frames, raw, _ = _replay(store, job_id)
        assert raw == b"kept\n"
        assert store.get_job(job_id).damaged
    finally:
        store.close(5)


def test_a_database_that_cannot_be_read_is_moved_aside_and_the_store_starts(tmp_path):
    data = tmp_path / "data"
    prepare_data_dir(str(data))
    (data / "history.sqlite3").write_bytes(b"this is not a database" * 100)
    store, _ = _store(data)
    try:
        job_id = _run(store, [("stdout", b"ok\n")])
        _on_disk(store, job_id)
        assert store.get_job(job_id).output_bytes == 3
        assert [p.name for p in data.iterdir() if ".damaged-" in p.name]
    finally:
        store.close(5)


def test_jobs_of_a_dead_worker_become_interrupted_with_a_final_event_after_their_output(tmp_path):
    store, _ = _store(tmp_path / "data")
    job = store.create_job(["sleep", "60"], 60, "jobs", owner="bob")
    log = store.local_log(job.id)
    log.append("start", {"type": "start"})
    log.append("stdout", {"type": "stdout", "out": "partial"}, b"partial")
    assert store.flush(10)
    store.close(5)
    conn = database.connect(store.db_path)
    conn.execute("UPDATE jobs SET worker_pid = 999999999")  # a worker that no longer exists
    with open(records.events_path(store.jobs_dir, job.id), "ab") as fh:
        fh.write(b"\x01\x02torn")  # a torn write at the crash
    conn.close()

    again, _ = _store(tmp_path / "data")
    try:
        stored = again.get_job(job.id)
        assert (stored.state, stored.reason, stored.damaged) == (JobState.INTERRUPTED, "interrupted", True)
        frames, raw, _ = _replay(again, job.id)
        assert raw == b"partial"
        assert frames[-1].startswith(b"id: 9\nevent: exit") and b'"reason":"interrupted"' in frames[-1]
    finally:
        again.close(5)


def test_the_data_dir_is_made_private_and_refused_when_unusable(tmp_path):
    made = tmp_path / "state" / "sse-commander"
    prepare_data_dir(str(made))
    assert made.stat().st_mode & 0o777 == 0o700
    (tmp_path / "file").write_text("")
    with pytest.raises(DataDirError, match=r"not a directory|cannot create"):
        prepare_data_dir(str(tmp_path / "file"))
    (made / "FORMAT").write_text("sse-commander-history 99\n")
    with pytest.raises(DataDirError, match="version 99 is not supported"):
        prepare_data_dir(str(made))
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, 65534, 65534)
    with pytest.raises(DataDirError, match="owned by uid 65534"):
        prepare_data_dir(str(other))


def test_several_stores_share_one_database_and_see_each_others_jobs(tmp_path):
    first, _ = _store(tmp_path / "data")
    second, _ = _store(tmp_path / "data")
    try:
        job_id = _run(first, [("stdout", b"from the first\n")])
        assert first.flush(10)
        assert second.get_job(job_id).state is JobState.EXITED
        assert _replay(second, job_id)[1] == b"from the first\n"
    finally:
        first.close(5)
        second.close(5)


def test_writes_use_immediate_transactions_under_a_busy_timeout(tmp_path):
    store, _ = _store(tmp_path / "data")
    try:
        blocker = sqlite3.connect(store.db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another worker holds the write lock for a moment
        job_id = _run(store, [("stdout", b"x")])
        time.sleep(0.3)
        blocker.execute("COMMIT")
        blocker.close()
        assert store.flush(10)
        assert store.get_job(job_id).state is JobState.EXITED
    finally:
        store.close(5)


def test_channels_come_back_with_their_epoch_and_newest_messages(tmp_path):
    store, _ = _store(tmp_path / "data", channel_history=3)
    for n in range(5):
        store.append(channel_key("ops"), "message", {"n": n})
    before = store.peek_channel("ops")
    assert store.flush(10)
    store.close(5)

    again, _ = _store(tmp_path / "data", channel_history=3)
    try:
        assert again.peek_channel("ops") == before
        resumed = again.read(channel_key("ops"), Position(before.epoch, 3))
        assert [event.id for event in resumed.events] == [4, 5] and not resumed.missed and not resumed.reset
        pruned = again.read(channel_key("ops"), Position(before.epoch, 1))
        assert [event.id for event in pruned.events] == [3, 4, 5] and pruned.missed == 1  # a gap, not an error
        other = again.read(channel_key("ops"), Position("zzzzzz", 2))
        assert other.reset
        event = again.append(channel_key("ops"), "message", {"n": 5})
        assert event.id == 6 and event.frame.startswith(f"id: {before.epoch}-6\n".encode())
    finally:
        again.close(5)


def test_retention_by_bytes_forgets_the_oldest_finished_jobs_and_never_a_running_one(tmp_path):
    store, _ = _store(tmp_path / "data", history_max_bytes=5000)
    try:
        # Each job takes about 2.1 KB on disk (its frames; ASCII output is not stored a second time as raw bytes).
        ids = [_run(store, [("stdout", bytes([65 + n]) * 2000)]) for n in range(4)]
        for job_id in ids:
            _on_disk(store, job_id)
        assert store.prune_history() == (0, 0)  # each ended a moment ago: still read, kept KEEP_RECENT seconds
        forgotten, freed = store.prune_history(keep_recent=0)
        assert forgotten == 2 and freed > 4000
        assert [store.get_job(job_id) is not None for job_id in ids] == [False, False, True, True]
        running = store.create_job(["sleep", "60"], 60, "jobs", owner="alice")
        assert store.flush(10)  # its row first; its output in a later round (the row's size follows it)
        store.local_log(running.id).append("stdout", {"type": "stdout", "out": "r" * 6000}, b"r" * 6000)
        for _ in range(100):  # the row follows its file's growth within GROWN_EVERY
            forgotten, _ = store.prune_history(keep_recent=0)
            if forgotten:
                break
            gevent.sleep(0.05)
        assert forgotten == 2  # over the limit by itself: every finished job goes, it stays
        assert store.get_job(running.id).state is JobState.RUNNING
    finally:
        store.close(5)


def test_the_listing_counts_a_job_committed_while_it_reads_exactly_once(tmp_path):
    """GET /jobs's counts, its page and the stored states of the jobs in memory come from one snapshot: a job
    whose record the writer commits between two of those reads is neither dropped nor counted twice."""
    from app.store.history.store import _find_rows
    from app.store.query import JobQuery

    store, _ = _store(tmp_path / "data")
    try:
        job = store.create_job(["echo", "hi"], 60, "run", owner="alice")  # in memory; its row not yet written
        db_path = store.db_path
        store.writer.stop(5)  # nothing else writes meanwhile
        writer = database.connect(db_path)
        with database.write(writer):
            writer.execute("DELETE FROM jobs WHERE id = ?", (job.id,))  # as if its record were still queued
        reader = database.connect(db_path)

        class CommitsAfterTheCounts:
            """The reader's connection; the writer commits the job's row right after the counts are read."""

            def execute(self, sql, *args):
                cursor = reader.execute(sql, *args)
                if "GROUP BY state" in sql:
                    with database.write(writer):
                        database.upsert_job(writer, database.job_record(job), (1, "x"), 0, 0)
                return cursor

        rows, counts, states, _ = _find_rows(CommitsAfterTheCounts(), JobQuery(), 0.0, 1000, [job.id])
        # As find_jobs merges them: a job in memory is counted once, whether or not its row was seen.
        total = sum(counts.values()) - (1 if job.id in states else 0) + 1
        assert total == 1
        assert [row.id for row in rows] == ([job.id] if job.id in states else [])
        writer.close()
        reader.close()
    finally:
        store.close(5)


def test_the_writer_keeps_no_output_once_it_is_written(tmp_path):
    """What the writer has written it lets go of before it waits: a finished job's last batch of frames must not
    outlive the job's release from memory (the worker's RSS grew with each finished job)."""
    import sys

    from app.store.history.writer import HistoryWriter
    from app.streaming.sse import OutputJSON, encode_json_frame

    raw = b"x" * 300_000
    frame, data_start = encode_json_frame(OutputJSON("stdout", raw), "stdout", 300_000)
    alone = sys.getrefcount(frame)
    writer = HistoryWriter(str(tmp_path / "db"), str(tmp_path), 1 << 30, (1, "x"))
    writer.start()
    try:
        writer.put_event("j", LogEvent(300_000, "stdout", frame, data_start, raw))
        deadline = time.monotonic() + 10
        while not writer.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.idle and writer.written_bytes > 0
        assert sys.getrefcount(frame) == alone  # neither the queue nor the last batch holds it
    finally:
        assert writer.stop(5)


def test_a_large_jobs_file_leaves_the_page_cache_behind_its_end_and_a_short_ones_is_left_alone(tmp_path, monkeypatch):
    """Every stretch of a flood's file is advised away twice (its writeback started, then dropped once clean)."""
    from app.store.history import writer as writer_module
    from app.streaming.sse import OutputJSON, encode_json_frame

    calls: list[tuple[str, int, int]] = []

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length))
        os.posix_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(writer_module, "_fadvise", fadvise)
    writer = writer_module.HistoryWriter(str(tmp_path / "db"), str(tmp_path), 1 << 30, (1, "x"))
    writer.start()
    try:
        chunk, event_id = b"y" * (1 << 20), 0
        for job_id, count in (("flood", 40), ("short", 1)):
            for _ in range(count):
                event_id += len(chunk)
                frame, data_start = encode_json_frame(OutputJSON("stdout", chunk), "stdout", event_id)
                writer.put_event(job_id, LogEvent(event_id, "stdout", frame, data_start, chunk, None, True))
            frame, data_start = encode_json_frame({"type": "exit"}, "exit", event_id + 1)
            writer.put_event(job_id, LogEvent(event_id + 1, "exit", frame, data_start))
        deadline = time.monotonic() + 30
        while not writer.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.idle
    finally:
        assert writer.stop(5)
    flood = records.events_path(str(tmp_path), "flood")
    size = os.path.getsize(flood)
    assert size > 40 << 20 and {path for path, _, _ in calls} == {flood}  # the 1 MiB job's cache is its own
    covered = [0] * (size // 4096 + 1)
    for _, offset, length in calls:
        assert offset >= 0 and offset + length <= size
        for page in range(offset // 4096, (offset + length - 1) // 4096 + 1):
            covered[page] += 1
    assert all(covered)  # the whole file, its tail at the close
    last_start = calls[-1][1]
    assert min(covered[: last_start // 4096]) >= 2


def test_a_job_over_the_byte_limit_by_itself_is_kept_for_a_minute_after_it_ends(tmp_path):
    """A flood bigger than history_max_bytes is not forgotten under its viewers' feet the moment it ends."""
    store, _ = _store(tmp_path / "data", history_max_bytes=5000)
    try:
        job_id = _run(store, [("stdout", b"f" * 8000)])
        _on_disk(store, job_id)
        ended = store.get_job(job_id).ended_at
        db_path, jobs_dir = store.db_path, store.jobs_dir
    finally:
        store.close(5)
    conn = database.connect(db_path)
    try:
        def prune(seconds_after_end: float) -> int:
            return database.prune(conn, jobs_dir, max_finished=200, ttl=3600, max_bytes=5000,
                                  now=ended + seconds_after_end)[0]

        assert prune(database.KEEP_RECENT - 1) == 0
        assert os.path.exists(records.events_path(jobs_dir, job_id))
        assert prune(database.KEEP_RECENT + 1) == 1
        assert not os.path.exists(records.events_path(jobs_dir, job_id))
    finally:
        conn.close()
