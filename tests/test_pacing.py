"""Paced viewers (Store.pace): a job waits for them as for GET /run's owner, but never for one that has stopped
reading for VIEWER_STALL seconds. The local log's holds (EventLog) and the owner's view of viewers on other
workers (redis/pacing.py ViewerPositions), without a server."""

from __future__ import annotations

import time

import gevent
import pytest

import app.store.eventlog as eventlog
from app.store.base import VIEWER_STALL
from app.store.eventlog import EventLog
from app.store.redis import pacing
from app.store.redis.pacing import ViewerPositions

from .test_eventlog import run_producer, start


def test_a_paced_viewer_that_reads_nothing_holds_the_producer_and_loses_nothing():
    log = EventLog(max_bytes=4_000)
    start(log)
    log.hold(log.last_id)
    producer = run_producer(log, b"t" * 100, 200)
    gevent.sleep(0.05)
    assert not producer.dead
    assert log.output_bytes <= 4_000 // 4 + 100  # the window plus one chunk
    assert log.dropped_bytes == 0
    producer.kill()


def test_the_slowest_of_several_paced_viewers_sets_the_pace_and_closing_it_frees_the_producer():
    log = EventLog(max_bytes=4_000)
    start(log)
    fast, slow = log.hold(log.last_id), log.hold(log.last_id)
    producer = run_producer(log, b"t" * 100, 200)
    cursor, missed = log.last_id, 0
    deadline = time.monotonic() + 0.3  # the fast one reads all it can meanwhile
    while time.monotonic() < deadline:
        read = log.read_after(cursor)
        missed += read.missed
        if read.events:
            cursor = read.events[-1].id
            fast.read_through(cursor)
        gevent.sleep(0.001)
    assert log.output_bytes <= 4_000 // 4 + 100  # held by the slow one, however fast the other reads
    fast.close()
    gevent.sleep(0.05)
    assert not producer.dead  # still held by the slow one
    slow.close()
    producer.join(timeout=2)
    assert producer.dead and log.output_bytes == 20_000


def test_a_paced_viewer_that_stops_reading_holds_the_producer_for_viewer_stall_seconds_only(monkeypatch):
    monkeypatch.setattr(eventlog, "VIEWER_STALL", 0.3)
    log = EventLog(max_bytes=4_000)
    start(log)
    log.hold(log.last_id)
    began = time.monotonic()
    producer = run_producer(log, b"t" * 100, 200)
    producer.join(timeout=5)
    assert producer.dead and log.output_bytes == 20_000
    assert 0.3 <= time.monotonic() - began < 3
    assert log.dropped_bytes > 0  # trimmed once nobody waited for it


def test_a_runs_job_waits_for_its_stream_from_the_start_until_it_comes():
    log = EventLog(max_bytes=4_000)
    log.expect_viewer()
    start(log)
    producer = run_producer(log, b"t" * 100, 200)
    gevent.sleep(0.05)
    assert not producer.dead and log.dropped_bytes == 0  # nothing trimmed before the stream came
    hold = log.hold(0)  # the stream comes, from the start, and reads everything
    cursor, received = 0, 0
    deadline = time.monotonic() + 5
    while not (producer.dead and cursor == log.last_id) and time.monotonic() < deadline:
        read = log.read_after(cursor)
        assert read.missed == 0
        if read.events:
            received += sum(len(e.raw) for e in read.events)
            cursor = read.events[-1].id
            hold.read_through(cursor)
        gevent.sleep(0.001)
    assert producer.dead and received == 20_000


def test_a_runs_job_nobody_comes_for_goes_on_after_viewer_stall_seconds(monkeypatch):
    monkeypatch.setattr(eventlog, "VIEWER_STALL", 0.3)
    log = EventLog(max_bytes=4_000)
    log.expect_viewer()
    start(log)
    producer = run_producer(log, b"t" * 100, 200)
    producer.join(timeout=5)
    assert producer.dead and log.output_bytes == 20_000


def test_without_a_paced_viewer_or_an_owner_nothing_waits():
    log = EventLog(max_bytes=400)
    hold = log.hold(0)
    hold.close()
    producer = run_producer(log, b"t" * 50, 100)
    producer.join(timeout=1)
    assert producer.dead and log.output_bytes == 5_000


# The owner's view of viewers on other workers (pure).


def test_positions_give_the_slowest_viewer_still_reading():
    positions = ViewerPositions()
    assert positions.slowest(now=0) is None
    positions.update({b"b:1": b"500", b"c:2": b"90"}, now=0)
    assert positions.slowest(now=1) == 90
    positions.update({b"b:1": b"900", b"c:2": b"90"}, now=VIEWER_STALL)  # c:2 has not moved since 0
    assert positions.slowest(now=VIEWER_STALL + 0.5) == 900
    positions.update({b"b:1": b"900", b"c:2": b"91"}, now=VIEWER_STALL + 1)  # it moves again: waited for again
    assert positions.slowest(now=VIEWER_STALL + 1) == 91


def test_positions_of_viewers_gone_from_the_hash_are_forgotten_and_nonsense_ignored():
    positions = ViewerPositions()
    positions.update({b"b:1": b"500", b"c:2": b"x"}, now=0)
    assert positions.slowest(now=0) == 500
    positions.update({}, now=1)
    assert positions.slowest(now=1) is None


@pytest.mark.parametrize("came", ["hash", "here"])
def test_an_expected_viewer_counts_as_one_at_offset_zero_until_it_comes_or_stalls(came):
    positions = ViewerPositions()
    positions.expect(now=0)
    positions.update({}, now=1)  # nobody yet: still expected
    assert positions.slowest(now=1) == 0
    assert positions.slowest(now=VIEWER_STALL + 0.1) is None  # nobody came in time
    positions.expect(now=10)
    if came == "hash":
        positions.update({b"b:1": b"7"}, now=11)
        assert positions.slowest(now=11) == 7
    else:
        positions.came()
        assert positions.slowest(now=11) is None


def test_a_job_hash_of_positions_is_named_by_prefix_and_job():
    assert pacing.pace_key("ssec:", "abc") == "ssec:pace:abc"
