"""Channel and multiplexed streams against real gunicorn: hang-ups noticed while idle, and graceful shutdown.

The server here sends a heartbeat only every 60 s, so a departed client can
only be noticed in time by watching its socket, not by a failed write.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from .channel_support import HTTP, Subscriber, channel_list, fresh, publish, subscribers, wait_subscribers
from .server import PYTHON, helper

HANG_UP_BOUND = 5.0  # seconds; the watcher notices within milliseconds


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    """Heartbeats far apart, stats every 0.2 s."""
    from .server import GunicornServer

    srv = GunicornServer(
        tmp_path_factory.mktemp("quiet"), {"SSECMD_HEARTBEAT_INTERVAL": "60", "SSECMD_STATS_INTERVAL": "0.2"}
    ).start()
    yield srv
    srv.stop()


def _open_streams(stats: Subscriber, after: int) -> tuple[int, int]:
    """(count of stats messages seen, open_streams of the newest), once one arrives after the first ``after``."""
    events = stats.wait_events(after + 1)
    return len(events), json.loads(events[-1].data)["data"]["open_streams"]


def _wait_open_streams(stats: Subscriber, expected: int, timeout: float) -> int:
    seen, value = _open_streams(stats, 0)
    deadline = time.monotonic() + timeout
    while value != expected and time.monotonic() < deadline:
        seen, value = _open_streams(stats, seen)
    return value


def _hang_up_is_noticed(srv, path: str, channel: str | None) -> None:
    with Subscriber(srv, "/channels/stats/events") as stats:
        assert stats.connected().status == 200
        before = _wait_open_streams(stats, 1, 5)  # the stats stream itself
        assert before == 1
        sub = Subscriber(srv, path).connected()
        assert sub.status == 200, bytes(sub.body)
        if channel is not None:
            assert wait_subscribers(srv, channel, 1, poke=False, timeout=5)
        assert _wait_open_streams(stats, 2, 5) == 2
        time.sleep(0.3)  # idle: nothing published, no heartbeat due
        sub.close()
        started = time.monotonic()
        if channel is not None:
            assert wait_subscribers(srv, channel, 0, poke=False, timeout=HANG_UP_BOUND), subscribers(srv, channel)
        assert _wait_open_streams(stats, 1, HANG_UP_BOUND) == 1
        assert time.monotonic() - started < HANG_UP_BOUND


def test_a_hang_up_on_an_idle_events_stream_is_noticed_promptly(quiet):
    channel = fresh("idle")
    _hang_up_is_noticed(quiet, f"/events?channel={channel}", channel)


def test_a_hang_up_on_an_idle_channel_stream_is_noticed_promptly(quiet):
    channel = fresh("idle")
    _hang_up_is_noticed(quiet, f"/channels/{channel}/events", channel)


def test_a_hang_up_on_an_events_stream_of_a_silent_job_is_noticed_promptly(quiet):
    job = HTTP.post(quiet.url("/jobs"), json={"argv": ["sleep", "30"]}).json()
    try:
        _hang_up_is_noticed(quiet, f"/events?job={job['id']}", None)
    finally:
        HTTP.delete(quiet.url(f"/jobs/{job['id']}"))


def test_streams_whose_clients_stay_keep_following(quiet):
    channel = fresh("stay")
    with Subscriber(quiet, f"/events?channel={channel}") as multi, \
            Subscriber(quiet, f"/channels/{channel}/events") as single:
        assert multi.connected().status == 200 and single.connected().status == 200
        assert wait_subscribers(quiet, channel, 2, poke=False)
        time.sleep(0.5)
        publish(quiet, channel, "still here")
        assert json.loads(multi.wait_events(1)[0].data)["data"]["data"] == "still here"
        assert json.loads(single.wait_events(1)[0].data)["data"] == "still here"
        assert channel_list(quiet)[channel]["subscribers"] == 2


def test_graceful_shutdown_delivers_the_exit_of_a_followed_job_before_the_farewell(make_server):
    # SSECMD_KILL_GRACE is 1 s on test servers: the job ignores SIGTERM and is killed a second later.
    srv = make_server({"SSECMD_HEARTBEAT_INTERVAL": "60"}, graceful_timeout=30)
    channel = fresh()
    job = HTTP.post(srv.url("/jobs"), json={"argv": [PYTHON, helper("stubborn.py")]}).json()
    with Subscriber(srv, f"/events?job={job['id']}&channel={channel}") as sub:
        assert sub.connected().status == 200
        sub.wait_events(2)  # start, "ignoring SIGTERM"
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)  # graceful: the master passes TERM on to the worker at once
        assert sub.wait_for(lambda s: s.ended, 15), bytes(sub.body[-500:])
        elapsed = time.monotonic() - started
    body = bytes(sub.body)
    events = sub.events
    # One line, which may arrive in two events: the child is unbuffered, so print writes text and newline apart.
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "exit" and set(kinds[1:-1]) == {"stdout"}, events
    assert "".join(json.loads(e.data)["data"]["out"] for e in events[1:-1]) == "ignoring SIGTERM\n"
    exit_data = json.loads(events[-1].data)
    assert exit_data["source"] == f"job:{job['id']}"
    assert exit_data["data"]["reason"] == "shutdown"
    assert exit_data["data"]["signal_name"] == "SIGKILL"
    # The farewell comes after the exit and ends the stream.
    farewell = body.index(b": server restarting")
    assert body.index(b"event: exit") < farewell
    assert sub.parser.retry is not None and sub.parser.retry >= 2000
    assert 0.8 < elapsed < 10  # waited for the kill after the 1 s grace, no longer


def test_graceful_shutdown_does_not_wait_for_channels(make_server):
    srv = make_server({"SSECMD_HEARTBEAT_INTERVAL": "60"}, graceful_timeout=30)
    channel = fresh()
    with Subscriber(srv, f"/events?channel={channel}&channel=jobs") as sub:
        assert sub.connected().status == 200
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert sub.wait_for(lambda s: s.ended, 15)
        elapsed = time.monotonic() - started
    assert b": server restarting" in bytes(sub.body)
    assert elapsed < 1.5, elapsed  # well below kill_grace + 1 s
