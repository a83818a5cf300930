"""Capacity as shipped: the default settings hold thousands of streams, and short requests always get through."""

from __future__ import annotations

import json
import random
import re
import resource
import time
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.http.admission import busy_delay_ms, busy_frame, wants_event_stream
from app.server.capacity import plan_capacity

from .server import wait_until
from .sse_parser import EventStreamParser
from .stream_support import StreamCrowd, answered, connected, raise_own_nofile

# More than gunicorn's default worker_connections (1000), which the service used to ship.
BEYOND_OLD_POOL = 1050


def _timed(call) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = call()
    return time.monotonic() - started, response


def test_default_settings_hold_more_than_a_thousand_streams_and_short_requests_get_through(make_server):
    raise_own_nofile(BEYOND_OLD_POOL + 200)
    srv = make_server({"SSECMD_HEARTBEAT_INTERVAL": "60"})
    with StreamCrowd(srv.port) as crowd:
        streams = crowd.open("/channels/crowd/events", BEYOND_OLD_POOL)
        assert crowd.wait_for(streams, connected, timeout=60), (
            f"{sum(map(connected, streams))} of {BEYOND_OLD_POOL} streams opened"
        )
        with httpx.Client(base_url=srv.base_url, timeout=5) as client:
            seconds, health = _timed(lambda: client.get("/healthz"))
            assert health.status_code == 200 and seconds < 1.0
            published = client.post("/channels/crowd/messages", json={"data": "to everyone"})
            assert published.status_code == 201
            assert client.get("/jobs").status_code == 200
            job = client.post("/jobs", json={"argv": ["sleep", "30"]})
            assert job.status_code == 201
            cancelled = client.delete(f"/jobs/{job.json()['id']}")
            assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert crowd.wait_for(streams, lambda s: b"to everyone" in s.received, timeout=30)


def _limits(pid: int) -> tuple[int, int]:
    """(soft, hard) open-files limit of a process, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())  # what "unlimited" is raised to
            return tuple(nr_open if value == "unlimited" else int(value) for value in (soft, hard))
    raise AssertionError("no open files line")


def test_workers_get_the_soft_open_files_limit_raised_to_the_hard_limit(make_server):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("the hard open-files limit is 1024: nothing to raise")
    # What a login shell or a plain systemd service gets: a soft limit of 1024.
    srv = make_server(nofile=(1024, hard))
    (worker,) = srv.worker_pids()
    soft_now, hard_now = _limits(worker)
    assert soft_now == min(hard_now, int(Path("/proc/sys/fs/nr_open").read_text())) and soft_now > 1024
    assert re.search(r"open files limit raised from 1024 to \d+", srv.log())
    assert "too low" not in srv.log()


def test_an_open_files_limit_too_low_is_warned_about_and_streams_stay_within_it(make_server):
    raise_own_nofile(800)
    srv = make_server({"SSECMD_MAX_STREAMS": "1000", "SSECMD_CONNECTION_HEADROOM": "100",
                       "SSECMD_HEARTBEAT_INTERVAL": "60"}, nofile=(600, 600))
    assert re.search(r"open files limit 600 is too low .* at most 370 streams and 408 connections", srv.log())
    health = httpx.get(srv.url("/healthz")).json()
    assert health["max_streams"] == 370
    with StreamCrowd(srv.port) as crowd:
        held = crowd.open("/channels/few/events", 370)
        assert crowd.wait_for(held, connected, timeout=60)
        refused = crowd.open("/channels/few/events", 10)
        assert crowd.wait_for(refused, answered, timeout=20)
        assert {s.status for s in refused} == {503}
        seconds, health = _timed(lambda: httpx.get(srv.url("/healthz"), timeout=5))
        assert health.status_code == 200 and seconds < 1.0
    assert "Too many open files" not in srv.log()


def _json_body(stream) -> dict:
    return json.loads(stream.head_and_body[1])


def test_streams_beyond_max_streams_are_refused_and_short_requests_still_answer(make_server):
    srv = make_server({"SSECMD_MAX_STREAMS": "20", "SSECMD_HEARTBEAT_INTERVAL": "60"})
    client = httpx.Client(base_url=srv.base_url, timeout=5)
    job = client.post("/jobs", json={"argv": ["sleep", "60"]}).json()
    with StreamCrowd(srv.port) as crowd:
        every_kind = [
            *crowd.open("/channels/full/events", 8),
            *crowd.open(f"/jobs/{job['id']}/events", 4),
            *crowd.open(f"/events?channel=full&job={job['id']}", 4),
            *crowd.open(f"/jobs/{job['id']}/output", 2),
            *crowd.open("/run?command=sleep%2060", 2),
        ]
        assert crowd.wait_for(every_kind, lambda s: s.status == 200, timeout=30)
        assert crowd.wait_for(every_kind, lambda s: b"\r\n\r\n" in s.received, timeout=30)
        health = client.get("/healthz").json()
        assert health["open_streams"] == 20 and health["max_streams"] == 20
        running = health["running_jobs"]

        # An EventSource is told to come back later, with a 200 it will not give up on.
        browsers = crowd.open("/channels/full/events", 5, {"Accept": "text/event-stream"})
        assert crowd.wait_for(browsers, answered, timeout=20)
        delays = set()
        for stream in browsers:
            head, body = stream.head_and_body
            assert stream.status == 200 and b"content-type: text/event-stream" in head.lower()
            parser = EventStreamParser()
            events = parser.feed(body)
            assert [e.type for e in events] == ["busy"] and events[0].last_event_id == ""
            delay = parser.retry
            assert 10_000 <= delay <= 20_000 and json.loads(events[0].data)["retry_ms"] == delay
            delays.add(delay)
        assert len(delays) > 1  # jittered, so refused clients do not all come back at once

        # Anyone else: 503 JSON with Retry-After. A refused /run starts nothing.
        others = crowd.open("/run?command=sleep%2060", 5)
        assert crowd.wait_for(others, answered, timeout=20)
        for stream in others:
            head, _ = stream.head_and_body
            assert stream.status == 503 and _json_body(stream)["error"] == "busy"
            assert re.search(rb"(?im)^retry-after: (1\d|20)\r?$", head)

        # Short requests get through, at once.
        seconds, health = _timed(lambda: client.get("/healthz"))
        assert health.status_code == 200 and seconds < 1.0
        assert health.json()["running_jobs"] == running
        assert client.post("/channels/full/messages", json={"data": "still here"}).status_code == 201
        assert client.get("/jobs").status_code == 200
        second = client.post("/jobs", json={"argv": ["sleep", "60"]})
        assert second.status_code == 201
        assert client.delete(f"/jobs/{second.json()['id']}").json()["state"] == "cancelled"
        assert crowd.wait_for(every_kind[:8], lambda s: b"still here" in s.received, timeout=10)

        # Closed streams free their places.
        crowd.close(every_kind[:5])
        assert wait_until(lambda: client.get("/healthz").json()["open_streams"] == 15, 10)
        again = crowd.open("/channels/full/events", 5)
        assert crowd.wait_for(again, connected, timeout=10)
    client.delete(f"/jobs/{job['id']}")
    client.close()


# The plan (pure).


def test_plan_sizes_the_pool_as_streams_plus_headroom_when_descriptors_suffice():
    settings = Settings(max_streams=12_000, connection_headroom=1000, max_running_jobs=32)
    plan = plan_capacity(settings, 20_000)
    assert (plan.max_streams, plan.worker_connections) == (12_000, 13_000)
    assert plan.fds_needed == 13_000 + 32 * 4 + 64 and not plan.limited_by_nofile


@pytest.mark.parametrize("nofile", [1024, 2000, 5000, 13_191])
def test_plan_shrinks_streams_and_headroom_in_proportion_when_descriptors_are_short(nofile):
    settings = Settings(max_streams=12_000, connection_headroom=1000, max_running_jobs=32)
    plan = plan_capacity(settings, nofile)
    assert plan.limited_by_nofile
    assert plan.worker_connections + 32 * 4 + 64 <= nofile
    headroom = plan.worker_connections - plan.max_streams
    assert headroom >= plan.worker_connections // 14 and plan.max_streams >= plan.worker_connections * 11 // 13


def test_plan_keeps_a_connection_for_short_requests_whatever_the_limit():
    plan = plan_capacity(Settings(max_streams=100, connection_headroom=1), 10)
    assert plan.worker_connections - plan.max_streams >= 1 and plan.max_streams >= 1


def test_plan_follows_a_smaller_pool_given_on_gunicorns_command_line():
    plan = plan_capacity(Settings(max_streams=12_000, connection_headroom=1000), 100_000, worker_connections=1300)
    assert plan.worker_connections == 1300 and plan.max_streams == 1200


def test_busy_frame_sets_the_delay_and_keeps_the_last_event_id():
    parser = EventStreamParser()
    parser.feed(b"id: 41\nevent: message\ndata: {}\n\n")  # what the client had before it reconnected
    events = parser.feed(busy_frame(12_345, 20))
    assert parser.retry == 12_345 and [e.type for e in events] == ["busy"]
    assert events[0].last_event_id == parser.last_event_id == "41"
    assert json.loads(events[0].data)["retry_ms"] == 12_345


def test_busy_delay_is_jittered_between_once_and_twice_the_base():
    rng = random.Random(7)
    delays = {busy_delay_ms(10_000, rng) for _ in range(50)}
    assert min(delays) >= 10_000 and max(delays) <= 20_000 and len(delays) > 10


@pytest.mark.parametrize(
    ("accept", "wanted"),
    [("text/event-stream", True), ("text/html, text/event-stream;q=0.9", True), ("TEXT/EVENT-STREAM", True),
     ("*/*", False), ("", False), (None, False), ("application/json", False)],
)
def test_which_clients_ask_for_an_event_stream(accept, wanted):
    assert wants_event_stream(accept) is wanted
