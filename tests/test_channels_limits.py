"""Channel limits against the real server: bounded history and gaps, the stats channel, source and size limits,
and a subscriber that stops reading."""

from __future__ import annotations

import itertools
import json
import re
import time

import httpx
import pytest

from .channel_support import (
    HTTP,
    Subscriber,
    assert_json_error,
    channel_list,
    envelope,
    epoch,
    fresh,
    id_number,
    publish,
    publish_raw,
    read_quietly,
    subscribers,
    wait_subscribers,
)
from .server import GunicornServer, wait_until

HISTORY = 5


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    srv = GunicornServer(
        tmp_path_factory.mktemp("tuned"),
        {
            "SSECMD_HEARTBEAT_INTERVAL": "1",
            "SSECMD_CHANNEL_HISTORY": str(HISTORY),
            "SSECMD_STATS_INTERVAL": "0.5",
            "SSECMD_MAX_STREAM_SOURCES": "3",
            "SSECMD_MAX_MESSAGE_BYTES": "1000",
        },
    ).start()
    yield srv
    srv.stop()


def _published(srv, count: int) -> tuple[str, str]:
    """A new channel with ``count`` messages (1 to ``count``), and its epoch."""
    channel = fresh("hist")
    ep = epoch(publish(srv, channel, 1)["id"])
    for n in range(2, count + 1):
        publish(srv, channel, n)
    return channel, ep


# (Last-Event-ID, messages missed, first id replayed) after 12 messages with the last 5 (8..12) kept.
GAP_CASES = [(None, 7, 8), (0, 7, 8), (1, 6, 8), (3, 4, 8), (6, 1, 8), (7, 0, 8), (9, 0, 10), (12, 0, 13)]


def test_resume_before_the_history_gets_a_gap_with_the_exact_count(tuned):
    channel, ep = _published(tuned, 12)
    path = f"/channels/{channel}/events"
    opened = []
    for cursor, missed, first in GAP_CASES:
        variants = [({}, "")] if cursor is None else [({"Last-Event-ID": f"{ep}-{cursor}"}, ""),
                                                      ({}, f"?last_event_id={ep}-{cursor}")]
        for headers, query in variants:
            opened.append((Subscriber(tuned, path + query, headers), cursor, missed, first))
    try:
        for sub, *_ in opened:
            assert sub.connected().status == 200
        time.sleep(0.3)  # anything extra would have arrived by now
        for sub, cursor, missed, first in opened:
            events = sub.events
            if missed:
                gap, *events = events
                assert gap.type == "gap", cursor
                assert json.loads(gap.data) == {"missed_messages": missed}, cursor
                assert gap.last_event_id == ""  # a gap carries no id of its own
            assert [e.type for e in events] == ["message"] * len(events)
            assert [e.last_event_id for e in events] == [f"{ep}-{n}" for n in range(first, 13)], cursor
            assert [envelope(e)["data"] for e in events] == list(range(first, 13))
    finally:
        for sub, *_ in opened:
            sub.close()


def test_a_gap_then_live_messages(tuned):
    channel, ep = _published(tuned, 9)
    with Subscriber(tuned, f"/channels/{channel}/events", {"Last-Event-ID": f"{ep}-2"}) as sub:
        assert sub.connected().status == 200
        publish(tuned, channel, 10)
        events = sub.wait_events(1 + HISTORY + 1)
    assert (events[0].type, json.loads(events[0].data)) == ("gap", {"missed_messages": 2})
    assert [e.last_event_id for e in events[1:]] == [f"{ep}-{n}" for n in range(5, 11)]


def test_channel_list_last_id_counts_every_message_not_only_the_kept_ones(tuned):
    channel, ep = _published(tuned, 12)
    assert channel_list(tuned)[channel]["last_id"] == f"{ep}-12"


def test_multiplexed_channel_gap_names_its_source(tuned):
    channel, ep = _published(tuned, 12)
    key = f"channel:{channel}"
    for headers, expected_missed in (({}, 7), ({"Last-Event-ID": f"{key}={ep}-3"}, 4),
                                     ({"Last-Event-ID": f"{key}={ep}-7"}, 0)):
        events = read_quietly(tuned, f"/events?channel={channel}", headers)
        if expected_missed:
            gap, *events = events
            assert gap.type == "gap"
            assert json.loads(gap.data) == {"source": key, "missed_messages": expected_missed}
        assert [json.loads(e.data)["id"] for e in events] == [f"{ep}-{n}" for n in range(8, 13)]
        assert [json.loads(e.data)["data"]["data"] for e in events] == list(range(8, 13))
        assert events[-1].last_event_id == f"{key}={ep}-12"


def test_too_many_sources_is_400(tuned):
    names = [fresh("src") for _ in range(4)]
    query = "&".join(f"channel={n}" for n in names)
    assert_json_error(HTTP.get(tuned.url(f"/events?{query}")), 400, "bad_request")
    assert_json_error(HTTP.get(tuned.url(f"/events?{query}&job=0123456789abcdef")), 400, "bad_request")
    three = "&".join(f"channel={n}" for n in names[:3])
    with Subscriber(tuned, f"/events?{three}") as sub:
        assert sub.connected().status == 200
    job = HTTP.post(tuned.url("/jobs"), json={"argv": ["true"]}).json()
    mixed = f"job={job['id']}&channel={names[0]}&channel={names[1]}&channel={names[2]}"
    assert_json_error(HTTP.get(tuned.url(f"/events?{mixed}")), 400, "bad_request")
    # A cursor with more parts than the request has sources.
    composite = ",".join(f"channel:{n}=0" for n in names)
    response = HTTP.get(tuned.url(f"/events?{three}"), headers={"Last-Event-ID": composite})
    assert_json_error(response, 400, "bad_request")


def test_message_size_limit_is_413(tuned):
    channel = fresh()
    publish(tuned, channel, text="x" * 1000)
    refused = publish_raw(tuned, channel, b"x" * 1001, "text/plain")
    assert_json_error(refused, 413, "bad_message")
    assert refused.json()["limit_bytes"] == 1000
    body = b'{"data": "' + b"y" * 980 + b'"}'
    assert len(body) == 992
    assert publish_raw(tuned, channel, body, "application/json").status_code == 201
    body = b'{"data": "' + b"y" * 990 + b'"}'
    assert_json_error(publish_raw(tuned, channel, body, "application/json"), 413, "bad_message")
    # Multi-byte characters count as bytes.
    assert_json_error(publish_raw(tuned, channel, "é".encode() * 501, "text/plain"), 413, "bad_message")
    assert id_number(channel_list(tuned)[channel]["last_id"]) == 2


def test_stats_are_published_only_while_someone_listens(tuned):
    assert wait_subscribers(tuned, "stats", 0, poke=False)
    before = channel_list(tuned)["stats"]["last_id"]
    time.sleep(1.1)  # more than two intervals
    assert channel_list(tuned)["stats"]["last_id"] == before
    with Subscriber(tuned, "/events?channel=stats", {"Last-Event-ID": f"channel:stats={before}"}) as sub:
        assert sub.connected().status == 200
        (event,) = sub.wait_events(1)[:1]
        data = json.loads(event.data)
        assert event.type == "stats" and data["source"] == "channel:stats"
        assert data["id"] == f"{epoch(before)}-{id_number(before) + 1}"


def _stats_messages(sub: Subscriber, count: int, timeout: float = 10) -> list:
    events = sub.wait_events(count, timeout)
    assert {e.type for e in events} == {"stats"}
    return events


def test_stats_channel_carries_counters_every_interval(tuned):
    after = channel_list(tuned)["stats"]["last_id"]
    with Subscriber(tuned, "/channels/stats/events", {"Last-Event-ID": after}) as sub:
        assert sub.connected().status == 200
        events = _stats_messages(sub, 3)
        arrivals = sub.frame_times[:3]
    for event in events:
        message = envelope(event)
        assert message["user"] is None
        stats = message["data"]
        assert {"worker_pid", "running_jobs", "open_streams", "load_average", "memory"} <= set(stats)
        assert isinstance(stats["worker_pid"], int)
        assert isinstance(stats["running_jobs"], int) and stats["running_jobs"] >= 0
        assert isinstance(stats["open_streams"], int) and stats["open_streams"] >= 1  # this stream at least
        assert len(stats["load_average"]) == 3 and all(isinstance(v, int | float) for v in stats["load_average"])
        memory = stats["memory"]
        assert isinstance(memory, dict)
        for key in ("worker_rss_bytes", "total_bytes", "available_bytes"):
            assert isinstance(memory.get(key), int) and memory[key] > 0, memory
        assert memory["available_bytes"] <= memory["total_bytes"]
    assert [e.last_event_id for e in events] == [f"{epoch(after)}-{id_number(after) + n}" for n in (1, 2, 3)]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(0.2 < gap < 2.0 for gap in gaps), gaps


def test_stats_reflect_running_jobs_and_open_streams(tuned):
    channel = fresh()
    after = channel_list(tuned)["stats"]["last_id"]
    with Subscriber(tuned, "/channels/stats/events", {"Last-Event-ID": after}) as sub:
        assert sub.connected().status == 200
        job = HTTP.post(tuned.url("/jobs"), json={"argv": ["sleep", "30"]}).json()
        others = [Subscriber(tuned, f"/channels/{channel}/events").connected() for _ in range(4)]
        try:
            def latest(s: Subscriber) -> dict:
                return envelope(s.parser.events[-1])["data"] if s.parser.events else {}

            assert sub.wait_for(lambda s: latest(s).get("running_jobs", 0) >= 1, 10), latest(sub)
            assert sub.wait_for(lambda s: latest(s).get("open_streams", 0) >= 5, 10), latest(sub)
            assert latest(sub)["worker_pid"] == HTTP.get(tuned.url("/healthz")).json()["worker_pid"]
            assert HTTP.delete(tuned.url(f"/jobs/{job['id']}")).status_code == 200
            count = len(sub.events)
            assert sub.wait_for(lambda s: len(s.parser.events) > count and latest(s)["running_jobs"] == 0, 10)
        finally:
            for other in others:
                other.close()
        # The departed subscribers are noticed and no longer counted as open streams.
        wait_subscribers(tuned, channel, 0)
        count = len(sub.events)
        assert sub.wait_for(lambda s: len(s.parser.events) > count and latest(s)["open_streams"] <= 2, 10), latest(sub)


def test_tuned_server_logged_no_errors(tuned):
    assert HTTP.get(tuned.url("/healthz")).status_code == 200
    log = tuned.log()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]


def test_a_stalled_subscriber_never_delays_the_others_and_is_dropped(make_server):
    # Every message is kept (so the readers' check is about delay, not the history limit).
    srv = make_server({
        "SSECMD_HEARTBEAT_INTERVAL": "1",
        "SSECMD_SEND_TIMEOUT": "2",
        "SSECMD_CHANNEL_HISTORY_BYTES": str(64 * 1024 * 1024),
    })
    channel = fresh("flood")
    path = f"/channels/{channel}/events"
    # Never reads, with a tiny receive window: the server's writes to it block within a few messages.
    stalled = Subscriber(srv, path, rcvbuf=4096, read=False)
    readers = [Subscriber(srv, path, parse=False, keep_body=False).connected() for _ in range(3)]
    assert wait_until(lambda: subscribers(srv, channel) == 4, 5)
    count, size = 200, 60_000
    sent_at: list[float] = []
    health: list[float] = []
    with httpx.Client(timeout=10) as client:  # keep-alive: 200 publishes quickly
        for n in range(count):
            sent_at.append(time.monotonic())
            response = client.post(srv.url(f"/channels/{channel}/messages"),
                                   json={"data": f"{n:04d}" + "z" * size})
            assert response.status_code == 201, response.text
            if n % 50 == 25:
                started = time.monotonic()
                assert client.get(srv.url("/healthz")).status_code == 200
                health.append(time.monotonic() - started)
        try:
            for reader in readers:
                frames = reader.wait_frames(count, timeout=30)
                assert len(frames) == count
                assert all(re.match(rb"id: [0-9a-z]+-%d\n" % (n + 1), frame) for n, frame in enumerate(frames))
                assert not any(frame.startswith(b"event: gap") for frame in frames)
                delays = [arrived - sent for arrived, sent in zip(reader.frame_times, sent_at, strict=True)]
                assert max(delays) < 5.0, max(delays)  # generous: typically a few milliseconds
            assert max(health) < 2.0, health
            # The stalled stream is dropped: logged, counted out, and its connection closed.
            assert wait_until(lambda: "dropping stream" in srv.log(), 15), srv.log()[-2000:]
            assert f"dropping stream /channels/{channel}/events" in srv.log()
            assert wait_until(lambda: subscribers(srv, channel) == 3, 10), channel_list(srv)[channel]
            assert stalled.drain_to_eof(10), "the server kept the stalled connection open"
            # The readers are still connected and still get new messages.
            client.post(srv.url(f"/channels/{channel}/messages"), json={"data": "after"})
            for reader in readers:
                assert len(reader.wait_frames(count + 1)) == count + 1
        finally:
            stalled.close()
            for reader in readers:
                reader.close()
    assert client.is_closed
    assert HTTP.get(srv.url("/healthz")).status_code == 200
    assert "unhandled error" not in srv.log()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Room for two channels besides jobs and stats."""
    srv = GunicornServer(
        tmp_path_factory.mktemp("small"), {"SSECMD_HEARTBEAT_INTERVAL": "1", "SSECMD_MAX_CHANNELS": "4"}
    ).start()
    yield srv
    srv.stop()


def _user_channels(srv) -> dict[str, int]:
    return {name: id_number(entry["last_id"]) for name, entry in channel_list(srv).items() if not entry["system"]}


def test_the_least_recently_written_idle_channel_is_forgotten(small):
    for n in range(5):
        publish(small, "older", n)
    publish(small, "newer", "just now")
    assert _user_channels(small) == {"older": 5, "newer": 1}
    publish(small, "third", "makes room")
    assert _user_channels(small) == {"newer": 1, "third": 1}


def test_too_many_channels_is_429_and_idle_ones_make_room(small):
    busy = [Subscriber(small, f"/channels/{name}/events").connected() for name in _user_channels(small)]
    try:
        assert len(busy) == 2
        before = _user_channels(small)
        channel = fresh()
        response = publish_raw(small, channel, b"no room", "text/plain")
        assert_json_error(response, 429, "too_many_channels")
        assert response.headers["retry-after"] == "60"
        assert_json_error(HTTP.get(small.url(f"/channels/{channel}/events")), 429, "too_many_channels")
        assert _user_channels(small) == before  # nothing was created, nothing forgotten
        # Channels that exist keep working.
        for name in before:
            publish(small, name, "still here")
    finally:
        for sub in busy:
            sub.close()
    assert all(wait_subscribers(small, name, 0) for name in before)
    publish(small, channel, "now there is room")
    assert channel in _user_channels(small) and len(_user_channels(small)) == 2


def test_too_many_channels_on_events_is_429(small):
    busy = [Subscriber(small, f"/channels/{name}/events").connected() for name in _user_channels(small)]
    try:
        assert len(busy) == 2
        response = HTTP.get(small.url(f"/events?channel={fresh()}"))
        assert_json_error(response, 429, "too_many_channels")
    finally:
        for sub in busy:
            sub.close()
