"""app/store/eventlog.py: ids in units, bounded memory, missed-byte accounting, waiting and owner flow control."""

from __future__ import annotations

import itertools
import json
import time

import gevent
import pytest
from gevent.event import Event
from hypothesis import given, settings
from hypothesis import strategies as st

from app.store.eventlog import EVENT_OVERHEAD_BYTES, EventLog

from .sse_parser import EventStreamParser

ALL = 10**9  # a read limit that never truncates


def out(log: EventLog, raw: bytes, kind: str = "stdout"):
    return log.append(kind, {"type": kind, "out": raw.decode("utf-8", errors="replace")}, raw)


def start(log: EventLog):
    return log.append("start", {"type": "start", "argv": ["x"]})


def retained(log: EventLog):
    """Events the log still holds, the pinned start event excluded."""
    return [e for e in log.read_after(0, limit=ALL).events if e.kind != "start"]


# Ids count units.


def test_ids_count_output_bytes_and_one_per_other_event():
    log = EventLog(10_000)
    assert log.last_id == 0
    assert start(log).id == 1
    assert out(log, b"hello").id == 6
    assert out(log, b"\xe2\x82\xac", "stderr").id == 9  # bytes, not characters
    assert log.append("exit", {"type": "exit", "code": 0}).id == 10
    assert log.last_id == 10
    assert log.output_bytes == 8


def test_event_keeps_raw_bytes_and_a_frame_that_parses_to_the_same_event():
    log = EventLog(10_000)
    raw = b"50%\r60%\r\n\x00\xff"
    event = out(log, raw)
    assert event.raw == raw and event.kind == "stdout"
    parsed = EventStreamParser().feed(event.frame)
    assert len(parsed) == 1
    assert (parsed[0].type, parsed[0].last_event_id) == ("stdout", str(event.id))
    assert json.loads(parsed[0].data) == {"type": "stdout", "out": raw.decode("utf-8", errors="replace")}


def test_appending_after_the_terminal_event_is_an_error():
    for terminal in ("exit", "err"):
        log = EventLog(10_000)
        log.append(terminal, {"type": terminal})
        assert log.finished
        with pytest.raises(RuntimeError):
            out(log, b"late")


def test_read_after_returns_events_after_the_cursor():
    log = EventLog(10_000)
    ids = [start(log).id, out(log, b"ab").id, out(log, b"cde").id, log.append("exit", {"type": "exit"}).id]
    assert ids == [1, 3, 6, 7]
    assert [e.id for e in log.read_after(0).events] == [1, 3, 6, 7]
    assert [e.id for e in log.read_after(1).events] == [3, 6, 7]
    assert [e.id for e in log.read_after(3).events] == [6, 7]
    assert [e.id for e in log.read_after(7).events] == []
    read = log.read_after(3)
    assert read.missed == 0 and read.finished and read.last_id == 7


def test_read_after_a_cursor_beyond_the_end_is_empty():
    log = EventLog(10_000)
    out(log, b"abc")
    read = log.read_after(1000)
    assert read.events == [] and read.missed == 0 and not read.finished and read.last_id == 3


def test_read_limit_pages_and_finished_only_on_the_last_page():
    log = EventLog(10_000)
    start(log)
    for _ in range(5):
        out(log, b"x")
    log.append("exit", {"type": "exit"})
    page = log.read_after(0, limit=2)
    assert [e.id for e in page.events] == [1, 2, 3] and not page.finished  # start + 2
    page = log.read_after(3, limit=2)
    assert [e.id for e in page.events] == [4, 5] and not page.finished
    page = log.read_after(5, limit=2)
    assert [e.id for e in page.events] == [6, 7] and page.finished


def test_unfinished_log_is_never_finished():
    log = EventLog(10_000)
    out(log, b"x")
    assert not log.read_after(0).finished and not log.read_after(1).finished


# Bounded memory.


def test_oldest_output_is_dropped_and_accounted():
    log = EventLog(max_bytes=1_200)
    start(log)
    events = [out(log, bytes([65 + i]) * 50) for i in range(10)]
    kept = retained(log)
    assert kept and kept[-1] == events[-1]
    assert len(kept) > 1 and sum(len(e.frame) + len(e.raw) + EVENT_OVERHEAD_BYTES for e in kept) <= 1_200
    dropped = [e for e in events if e not in kept]
    assert dropped and dropped == events[: len(dropped)]  # the oldest go first
    assert log.dropped_bytes == 50 * len(dropped)
    assert log.output_bytes == 500


def test_start_event_is_pinned_and_never_dropped():
    log = EventLog(max_bytes=100)
    first = start(log)
    for _ in range(50):
        out(log, b"y" * 40)
    read = log.read_after(0)
    assert read.events[0] == first
    assert read.missed == log.dropped_bytes > 0
    # The gap is reported after the start event: everything up to the oldest kept event.
    assert read.missed == read.events[1].id - len(read.events[1].raw) - first.id


def test_only_the_first_start_event_is_pinned():
    log = EventLog(max_bytes=100)
    out(log, b"before")
    late = start(log)
    for _ in range(20):
        out(log, b"z" * 40)
    assert late not in log.read_after(0).events


def test_newest_event_is_kept_even_if_larger_than_the_budget():
    log = EventLog(max_bytes=10)
    out(log, b"a" * 5)
    big = out(log, b"b" * 100)
    assert retained(log) == [big]
    assert log.dropped_bytes == 5


def test_terminal_event_survives_trimming():
    log = EventLog(max_bytes=150)
    start(log)
    for _ in range(10):
        out(log, b"q" * 60)
    end = log.append("exit", {"type": "exit", "code": 0})
    read = log.read_after(0)
    assert read.events[-1] == end and read.finished


def test_missed_bytes_for_cursors_inside_and_after_the_dropped_range():
    log = EventLog(max_bytes=200)
    start(log)  # id 1
    ids = [out(log, b"m" * 50).id for _ in range(10)]  # ids 51, 101, ..., 501
    kept_first = retained(log)[0].id
    dropped_through = kept_first - 50
    assert log.read_after(0).missed == dropped_through - 1
    assert log.read_after(ids[0]).missed == dropped_through - ids[0]
    assert log.read_after(dropped_through).missed == 0
    assert log.read_after(ids[-1]).missed == 0


def test_many_events_compaction_keeps_reads_correct():
    log = EventLog(max_bytes=8_000)
    start(log)
    for i in range(5_000):
        out(log, b"%d\n" % i)
    read = log.read_after(0, limit=ALL)
    assert read.events[0].kind == "start"
    kept = read.events[1:]
    assert len(kept) > 10
    assert all(b.id - a.id == len(b.raw) for a, b in itertools.pairwise(kept))
    assert kept[-1].id == log.last_id
    assert read.missed + sum(len(e.raw) for e in kept) == log.output_bytes
    middle = kept[len(kept) // 2]
    assert log.read_after(middle.id).events[0].id > middle.id
    assert log.read_after(middle.id - 1).events[0] == middle


OUTPUT_SIZES = st.lists(st.integers(min_value=1, max_value=120), max_size=40)


@settings(max_examples=100, deadline=None)
@given(
    with_start=st.booleans(),
    sizes=OUTPUT_SIZES,
    terminal=st.booleans(),
    max_bytes=st.integers(min_value=1, max_value=1_500),
    control=st.booleans(),
)
def test_accounting_is_exact_for_every_cursor(with_start, sizes, terminal, max_bytes, control):
    log = EventLog(max_bytes)
    appended = []
    if with_start:
        appended.append(start(log))
    for n, size in enumerate(sizes):
        raw = (b"\x01" if control else b"o") * size
        appended.append(out(log, raw, "stderr" if n % 3 == 2 else "stdout"))
        kept = retained(log)
        # Bounded: within budget, or down to the single newest event.
        assert sum(len(e.frame) + len(e.raw) + EVENT_OVERHEAD_BYTES for e in kept) <= max_bytes or len(kept) == 1
        assert log.retained_bytes == sum(len(e.frame) + len(e.raw) + EVENT_OVERHEAD_BYTES for e in kept)
    if terminal:
        appended.append(log.append("exit", {"type": "exit", "code": 0}))

    ids = [e.id for e in appended]
    assert ids == sorted(set(ids))
    assert all(b.id - a.id == max(len(b.raw), 1) for a, b in itertools.pairwise(appended))
    assert log.last_id == (ids[-1] if ids else 0)
    assert log.output_bytes == sum(sizes)
    kept_ids = {e.id for e in retained(log)}
    assert log.dropped_bytes == sum(len(e.raw) for e in appended if e.id not in kept_ids and e.kind != "start")

    for cursor in [0, *ids]:
        read = log.read_after(cursor, limit=ALL)
        got = [e for e in read.events if e.kind != "start"]
        after = [e for e in appended if e.id > cursor and e.kind != "start"]
        # What comes back is a contiguous suffix of what came after the cursor ...
        assert got == after[len(after) - len(got) :]
        # ... and missed_bytes is exactly the output between the cursor and that suffix.
        assert read.missed + sum(len(e.raw) for e in got) == sum(len(e.raw) for e in after)
        assert read.finished is terminal
        if with_start:
            assert (read.events[:1] == [appended[0]]) == (cursor < appended[0].id)


# wait


def test_wait_returns_at_once_when_something_is_already_there():
    log = EventLog(10_000)
    out(log, b"abc")
    began = time.monotonic()
    assert log.wait(0, timeout=5) is True
    assert log.wait(2, timeout=5) is True
    assert time.monotonic() - began < 0.5


def test_wait_returns_at_once_when_finished():
    log = EventLog(10_000)
    log.append("exit", {"type": "exit"})
    assert log.wait(1, timeout=5) is True


def test_wait_times_out_with_false():
    log = EventLog(10_000)
    out(log, b"abc")
    began = time.monotonic()
    assert log.wait(3, timeout=0.05) is False
    assert 0.04 <= time.monotonic() - began < 1.0


def test_wait_wakes_on_append_from_another_greenlet():
    log = EventLog(10_000)
    gevent.spawn_later(0.02, out, log, b"late")
    began = time.monotonic()
    assert log.wait(0, timeout=5) is True
    assert time.monotonic() - began < 1.0
    assert log.read_after(0).events[0].raw == b"late"


def test_wait_wakes_every_waiter():
    log = EventLog(10_000)
    waiters = [gevent.spawn(log.wait, 0, 5) for _ in range(3)]
    gevent.sleep(0)
    out(log, b"x")
    assert gevent.joinall(waiters, timeout=1) and [w.value for w in waiters] == [True, True, True]


def test_wait_wakes_on_a_wake_event():
    log = EventLog(10_000)
    stop = Event()
    gevent.spawn_later(0.02, stop.set)
    began = time.monotonic()
    assert log.wait(0, timeout=5, wake=[stop]) is True
    assert time.monotonic() - began < 1.0


# Owner flow control (GET /run).


def run_producer(log: EventLog, chunk: bytes, count: int, wake=()) -> gevent.Greenlet:
    def produce():
        for _ in range(count):
            log.wait_for_room(wake=wake)
            out(log, chunk)

    return gevent.spawn(produce)


def test_without_an_owner_the_producer_never_waits():
    log = EventLog(max_bytes=400)
    producer = run_producer(log, b"t" * 50, 100)
    producer.join(timeout=1)
    assert producer.dead and log.output_bytes == 5_000
    assert log.dropped_bytes > 0  # nobody asked the log to hold back


def blocked_producer(chunk: bytes):
    """A log (4,000 bytes) whose owner reads nothing, and a producer that has tried to write ``chunk`` 200 times."""
    log = EventLog(max_bytes=4_000)
    log.claim_owner()
    start(log)
    producer = run_producer(log, chunk, 200)
    gevent.sleep(0.05)
    return log, producer


def test_owner_that_reads_nothing_blocks_the_producer_and_loses_nothing():
    log, producer = blocked_producer(b"t" * 100)
    assert not producer.dead
    assert log.output_bytes <= 4_000 // 4 + 100  # the backlog limit plus one chunk
    assert log.dropped_bytes == 0
    producer.kill()


def test_owner_reading_lets_the_producer_continue_without_loss():
    log = EventLog(max_bytes=4_000)
    log.claim_owner()
    producer = run_producer(log, b"t" * 100, 200)
    cursor, received, missed = 0, 0, 0
    deadline = time.monotonic() + 5
    while not (producer.dead and cursor == log.last_id) and time.monotonic() < deadline:
        read = log.read_after(cursor)
        missed += read.missed
        if read.events:
            received += sum(len(e.raw) for e in read.events)
            cursor = read.events[-1].id
            log.owner_read_through(cursor)
        gevent.sleep(0.001)
    assert producer.dead
    assert (received, missed) == (20_000, 0)  # dropped_bytes may grow: only what the owner already read


def test_owner_read_through_only_frees_room_when_caught_up_enough():
    log = EventLog(max_bytes=4_000)
    log.claim_owner()
    producer = run_producer(log, b"t" * 100, 200)
    gevent.sleep(0.02)
    blocked_at = log.last_id
    assert blocked_at == 1_100  # blocked once the backlog passed max_bytes // 4
    log.owner_read_through(50)  # still more than a quarter of the budget behind
    gevent.sleep(0.02)
    assert log.last_id == blocked_at
    log.owner_read_through(blocked_at)
    gevent.sleep(0.02)
    assert log.last_id > blocked_at
    producer.kill()


def test_release_owner_unblocks_the_producer_for_good():
    log = EventLog(max_bytes=4_000)
    log.claim_owner()
    producer = run_producer(log, b"t" * 100, 200)
    gevent.sleep(0.02)
    assert not producer.dead
    log.release_owner()
    producer.join(timeout=2)
    assert producer.dead and log.output_bytes == 20_000
    log.owner_read_through(5)  # ignored once released: must not re-arm the owner
    again = run_producer(log, b"t" * 100, 50)
    again.join(timeout=2)
    assert again.dead and log.output_bytes == 25_000


def test_wake_event_ends_wait_for_room():
    log = EventLog(max_bytes=4_000)
    log.claim_owner()
    stopping = Event()
    producer = run_producer(log, b"t" * 100, 200, wake=(stopping,))
    gevent.sleep(0.02)
    before = log.last_id
    stopping.set()
    producer.join(timeout=2)
    # With the wake event set, the producer is no longer held back (it runs to the end).
    assert before < 2_000
    assert producer.dead and log.output_bytes == 20_000


def test_owner_read_through_without_claim_is_ignored():
    log = EventLog(max_bytes=400)
    log.owner_read_through(0)
    producer = run_producer(log, b"t" * 50, 40)
    producer.join(timeout=1)
    assert producer.dead


def test_owner_that_reads_nothing_loses_nothing_even_for_control_byte_output():
    log, producer = blocked_producer(b"\x00" * 100)
    producer.kill()
    assert log.dropped_bytes == 0
    assert log.read_after(0).missed == 0
