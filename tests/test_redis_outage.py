"""Redis down and back (issue 16): 503s while it is away, jobs that keep running, nothing lost with AOF, a reset
without persistence. Each test has its own redis-server, which it stops and starts again."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest

from .channel_support import HTTP, Subscriber, epoch, fresh, publish, publish_raw
from .redis_support import RedisServer
from .server import PYTHON, helper, wait_until
from .sse_client import collect


@pytest.fixture
def own_redis(request):
    servers = []

    def make(**kwargs) -> RedisServer:
        servers.append(RedisServer(**kwargs).start())
        return servers[-1]

    yield make
    for srv in servers:
        srv.remove()


def _health(srv) -> httpx.Response:
    return httpx.get(srv.url("/healthz"), timeout=10)


def test_while_redis_is_down_requests_get_503_jobs_keep_running_and_with_aof_nothing_is_lost(
    make_server, own_redis
):
    redis_server = own_redis(appendonly=True)
    srv = make_server({"SSECMD_STORE_URL": redis_server.url, "SSECMD_HEARTBEAT_INTERVAL": "1"}, workers=2)
    health = _health(srv).json()
    assert health["store"]["backend"] == "redis" and health["store"]["latency_ms"] >= 0
    channel = fresh("aof")
    kept = publish(srv, channel, "kept")["id"]
    lines = [f"out:{f'line {n}'.encode().hex()}0a:0.1" for n in range(50)]
    response = HTTP.post(srv.url("/jobs"), json={"command": f"{PYTHON} {helper('emit.py')} " + " ".join(lines)})
    job = response.json()["id"]
    time.sleep(0.5)

    redis_server.stop()  # SIGTERM: what was written is in the append-only file
    assert wait_until(lambda: _health(srv).status_code == 503, 10)
    answer = _health(srv).json()
    assert answer["status"] == "store_unavailable" and answer["store"]["error"], answer
    refused = HTTP.post(srv.url("/jobs"), json={"command": "echo hi"})
    assert refused.status_code == 503 and refused.json()["error"] == "store_unavailable", refused.text
    assert refused.headers["Retry-After"]
    refused = publish_raw(srv, channel, b"lost?", "text/plain")
    assert refused.status_code == 503 and refused.json()["error"] == "store_unavailable", refused.text
    time.sleep(1)

    redis_server.start()  # the same directory: it reads its append-only file
    assert wait_until(lambda: _health(srv).status_code == 200, 15)
    assert wait_until(lambda: HTTP.get(srv.url(f"/jobs/{job}")).json()["state"] == "exited", 20)
    expected = b"".join(f"line {n}\n".encode() for n in range(50))
    assert HTTP.get(srv.url(f"/jobs/{job}/output")).content == expected  # buffered, then written: every byte
    events = collect(srv.url(f"/jobs/{job}/events"))
    assert "gap" not in [e.type for e in events] and events[-1].type == "exit"
    assert [int(e.last_event_id) for e in events] == sorted({int(e.last_event_id) for e in events})
    with Subscriber(srv, f"/channels/{channel}/events") as sub:
        assert [e.last_event_id for e in sub.connected().wait_events(1)] == [kept]  # same epoch, same id
    assert epoch(publish(srv, channel, "after")["id"]) == epoch(kept)


def test_a_restart_without_persistence_ends_streams_with_retry_and_resumes_get_reset(make_server, own_redis):
    redis_server = own_redis()
    srv = make_server({"SSECMD_STORE_URL": redis_server.url, "SSECMD_HEARTBEAT_INTERVAL": "1"}, workers=2)
    channel = fresh("gone")
    old = publish(srv, channel, "before")["id"]
    with Subscriber(srv, f"/channels/{channel}/events", {"Last-Event-ID": old}) as live:
        assert live.connected().status == 200
        time.sleep(0.3)
        redis_server.stop(signal.SIGKILL)
        assert live.wait_for(lambda sub: sub.ended, 15), bytes(live.body[-200:])  # the server ended it
        assert b"retry: " in bytes(live.body).partition(b": connected")[2], bytes(live.body[-200:])
    redis_server.start()  # empty: a restart without persistence is a flush
    assert wait_until(lambda: _health(srv).status_code == 200, 15)
    new = publish(srv, channel, "after")["id"]
    assert epoch(new) != epoch(old)
    with Subscriber(srv, f"/channels/{channel}/events", {"Last-Event-ID": old}) as resumed:
        events = resumed.connected().wait_events(2)
    assert [e.type for e in events] == ["reset", "message"] and events[1].last_event_id == new
    assert json.loads(events[1].data)["data"] == "after"
