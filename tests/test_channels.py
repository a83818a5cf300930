"""Channels against the real gunicorn server: publish/subscribe, fan-out, replay, GET /channels, the jobs channel.

Bad input is in tests/test_channels_input.py, GET /events in tests/test_channels_multiplex.py,
history limits, stats and stalled clients in tests/test_channels_limits.py, access control in
tests/test_channels_auth.py.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta

import httpx
import pytest

from .channel_support import (
    HTTP,
    Subscriber,
    channel_list,
    envelope,
    epoch,
    fresh,
    id_number,
    publish,
    publish_raw,
    read_events,
    read_quietly,
    subscribers,
    wait_subscribers,
)
from .sse_parser import EventStreamParser

# Also on the Redis store (issue 16): the same behaviour, whichever store holds the logs.
pytestmark = pytest.mark.backends("memory", "redis")

# Every JSON type, and strings that SSE framing must not break.
VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**53,
    -(2**63),
    10**30,
    1.5,
    -0.25,
    1e300,
    5e-324,
    "",
    "plain",
    "line one\nline two\r\nline three\rend",
    "data: fake\n\nevent: error\nid: 999\n\n",
    "unicode: é 中文 😀 \u2028\u2029 \x85 \x00 \x1b[31m",
    " leading and trailing spaces ",
    [],
    [1, "two", None, [3.5, [False]]],
    {},
    {"nested": {"deeper": {"list": [1, {"k": "v"}]}}, "": "empty key", "ünï": "cödé"},
]


def _checked_time(text: str) -> datetime:
    stamp = datetime.fromisoformat(text)
    assert stamp.utcoffset() == timedelta(0), text
    assert abs(time.time() - stamp.timestamp()) < 120, text
    return stamp


def test_publish_answers_201_with_consecutive_ids(server):
    channel = fresh()
    answers = [publish(server, channel, n) for n in range(5)]
    assert [id_number(a["id"]) for a in answers] == [1, 2, 3, 4, 5]
    assert len({epoch(a["id"]) for a in answers}) == 1  # one history: one epoch
    assert channel_list(server)[channel]["last_id"] == answers[-1]["id"]


def test_every_json_type_arrives_exactly_with_a_null_user_and_a_time(server):
    channel = fresh()
    for value in VALUES:
        publish(server, channel, value)
    events = read_events(server, f"/channels/{channel}/events", len(VALUES))
    assert [e.type for e in events] == ["message"] * len(VALUES)
    assert [id_number(e.last_event_id) for e in events] == list(range(1, len(VALUES) + 1))
    for value, event in zip(VALUES, events, strict=True):
        message = envelope(event)
        assert set(message) == {"data", "user", "time"}
        assert message["data"] == value and type(message["data"]) is type(value), (value, event.data)
        assert message["user"] is None  # auth is off
        _checked_time(message["time"])
    times = [_checked_time(envelope(e)["time"]) for e in events]
    assert times == sorted(times)


def test_custom_event_names_become_the_event_type(server):
    channel = fresh()
    names = ["notice", "Deploy.Started-1_x", "x", "E" * 64, "message", "Error", "job", "stats", "data"]
    for n, name in enumerate(names):
        publish(server, channel, {"n": n}, event=name)
    events = read_events(server, f"/channels/{channel}/events", len(names))
    assert [e.type for e in events] == names
    assert [envelope(e)["data"] for e in events] == [{"n": n} for n in range(len(names))]


def test_plain_text_bodies_arrive_verbatim(server):
    channel = fresh()
    texts = [
        "hello everyone",
        "two\nlines\r\nand a CR\r",
        '{"data": "this is text, not JSON"}',
        "trailing newline\n",
        "émoji 😀 and a NUL \x00",
        " ",
    ]
    content_types = ["text/plain", "text/plain; charset=utf-8", None, "text/html", "application/octet-stream",
                     "application/x-www-form-urlencoded"]
    for text, content_type in zip(texts, content_types, strict=True):
        response = publish_raw(server, channel, text.encode("utf-8"), content_type)
        assert response.status_code == 201, response.text
        assert response.json()["event"] == "message"
    events = read_events(server, f"/channels/{channel}/events", len(texts))
    assert [envelope(e)["data"] for e in events] == texts
    assert {e.type for e in events} == {"message"}


def test_json_content_types_are_parsed(server):
    channel = fresh()
    for content_type in ("application/json", "application/json; charset=utf-8", "application/vnd.test+json"):
        response = publish_raw(server, channel, b'{"data": [1], "event": "typed"}', content_type)
        assert response.status_code == 201, (content_type, response.text)
    events = read_events(server, f"/channels/{channel}/events", 3)
    assert [(e.type, envelope(e)["data"]) for e in events] == [("typed", [1])] * 3


def test_a_message_of_exactly_the_limit_is_accepted(server):
    channel = fresh()
    text = "x" * 65536  # max_message_bytes and max_body_bytes are both 64 KiB by default
    publish(server, channel, text=text)
    (event,) = read_events(server, f"/channels/{channel}/events", 1)
    assert envelope(event)["data"] == text


def test_fifty_httpx_subscribers_get_every_message_in_order_with_identical_bytes(server):
    channel = fresh("fan")
    count, readers = 25, 50
    connected = threading.Barrier(readers + 1, timeout=20)
    results: dict[int, tuple[list, bytes]] = {}
    errors: list[BaseException] = []
    # One client (thread-safe, one pool) for every stream: building 50 clients costs seconds.
    client = httpx.Client(timeout=httpx.Timeout(20, connect=5), limits=httpx.Limits(max_connections=readers + 5))

    def read(index: int) -> None:
        try:
            parser = EventStreamParser()
            raw = bytearray()
            with client.stream("GET", server.url(f"/channels/{channel}/events")) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                connected.wait()
                for chunk in response.iter_raw():
                    raw += chunk
                    parser.feed(chunk)
                    if len(parser.events) >= count:
                        break
            results[index] = (parser.events, bytes(raw))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            connected.abort()

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(readers)]
    try:
        for thread in threads:
            thread.start()
        connected.wait()
        assert subscribers(server, channel) == readers
        sent = [{"n": n, "text": "é" * n, "list": list(range(n % 7))} for n in range(count)]
        for n, data in enumerate(sent):
            publish(server, channel, data, event="tick" if n % 2 else None)
        for thread in threads:
            thread.join(30)
    finally:
        client.close()
    assert not errors, errors
    assert len(results) == readers
    reference_frames = None
    for events, raw in results.values():
        assert [id_number(e.last_event_id) for e in events[:count]] == list(range(1, count + 1))
        assert [envelope(e)["data"] for e in events[:count]] == sent
        assert [e.type for e in events[:count]] == ["message" if n % 2 == 0 else "tick" for n in range(count)]
        frames = [block for block in raw.split(b"\n\n") if block.startswith(b"id:")][:count]
        if reference_frames is None:
            reference_frames = frames
        assert frames == reference_frames  # one encoding, the same bytes for everyone
    assert wait_subscribers(server, channel, 0)


def test_two_hundred_raw_socket_subscribers_see_the_same_bytes(server):
    channel = fresh("raw")
    subs = [Subscriber(server, f"/channels/{channel}/events") for _ in range(200)]
    try:
        for sub in subs:
            sub.connected()
            assert sub.status == 200
        assert subscribers(server, channel) == 200
        sent = ["small", {"big": "z" * 30000}, [1, 2, 3], "last"]
        for data in sent:
            publish(server, channel, data)
        for sub in subs:
            sub.wait_frames(len(sent), timeout=20)
        reference = subs[0].frames()
        assert len(reference) == len(sent)
        for sub in subs:
            assert sub.frames() == reference
            assert [envelope(e)["data"] for e in sub.events] == sent
            assert [id_number(e.last_event_id) for e in sub.events] == [1, 2, 3, 4]
    finally:
        for sub in subs:
            sub.close()
    assert wait_subscribers(server, channel, 0)


def test_replay_then_live_without_gaps_or_duplicates(server):
    channel = fresh()
    for n in range(1, 6):
        publish(server, channel, n)
    with Subscriber(server, f"/channels/{channel}/events") as sub:
        assert sub.connected().status == 200
        sub.wait_events(5)
        for n in range(6, 11):
            publish(server, channel, n)
        events = sub.wait_events(10)
        sub.wait_for(lambda s: False, 0.3)
        events = sub.events
    assert [envelope(e)["data"] for e in events] == list(range(1, 11))
    assert [id_number(e.last_event_id) for e in events] == list(range(1, 11))


def test_resume_with_last_event_id_header_and_query(server):
    channel = fresh()
    ep = epoch(publish(server, channel, 1)["id"])
    for n in range(2, 11):
        publish(server, channel, n)
    path = f"/channels/{channel}/events"
    cases = [
        ({"Last-Event-ID": f"{ep}-4"}, "", range(5, 11)),
        ({}, f"?last_event_id={ep}-4", range(5, 11)),
        ({"Last-Event-ID": f" {ep}-4 "}, "", range(5, 11)),
        ({"Last-Event-ID": f"{ep}-8"}, f"?last_event_id={ep}-1", range(9, 11)),  # the header wins over the query
        ({"Last-Event-ID": ""}, "", range(1, 11)),  # empty, or 0: from the start
        ({"Last-Event-ID": "0"}, "", range(1, 11)),
        ({"Last-Event-ID": f"{ep}-0"}, "", range(1, 11)),
        ({}, "?last_event_id=", range(1, 11)),
        ({"Last-Event-ID": f"{ep}-10"}, "", range(0)),  # at the end: nothing replayed
    ]
    subs = [Subscriber(server, path + query, headers) for headers, query, _ in cases]
    try:
        for sub in subs:
            assert sub.connected().status == 200, bytes(sub.body)
        time.sleep(0.3)  # anything extra (a duplicate) would have arrived by now
        for sub, (headers, query, expected) in zip(subs, cases, strict=True):
            events = sub.events
            assert [e.last_event_id for e in events] == [f"{ep}-{n}" for n in expected], (headers, query)
            assert [envelope(e)["data"] for e in events] == list(expected)
        # ... and then every one of them follows live.
        publish(server, channel, 11)
        for sub, (_, _, expected) in zip(subs, cases, strict=True):
            events = sub.wait_events(len(expected) + 1)
            assert (events[-1].last_event_id, envelope(events[-1])["data"]) == (f"{ep}-11", 11)
    finally:
        for sub in subs:
            sub.close()


def test_reconnect_after_a_disconnect_gets_exactly_what_was_missed(server):
    channel = fresh()
    path = f"/channels/{channel}/events"
    received = []
    last_id = ""
    for round_ in range(4):
        headers = {"Last-Event-ID": last_id} if last_id else {}
        with Subscriber(server, path, headers) as sub:
            assert sub.connected().status == 200
            for n in range(3):
                publish(server, channel, f"live {round_}.{n}")
            events = sub.wait_events(3 if round_ == 0 else 5)
        received += events
        last_id = events[-1].last_event_id
        # Published while nobody is connected: must come with the next reconnect.
        publish(server, channel, f"offline {round_}.0")
        publish(server, channel, f"offline {round_}.1")
    final = read_quietly(server, path, {"Last-Event-ID": last_id})
    received += final
    ids = [id_number(e.last_event_id) for e in received]
    assert ids == list(range(1, 21)), ids
    assert [envelope(e)["data"] for e in received][:5] == ["live 0.0", "live 0.1", "live 0.2", "offline 0.0",
                                                           "offline 0.1"]


def test_channel_list_shape_and_system_channels(server):
    channel = fresh("list")
    publish(server, channel, "one")
    last = publish(server, channel, "two")["id"]
    response = HTTP.get(server.url("/channels"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    entries = response.json()["channels"]
    assert [e["name"] for e in entries] == sorted(e["name"] for e in entries)
    by_name = {e["name"]: e for e in entries}
    for name in ("jobs", "stats"):
        assert by_name[name]["system"] is True
        assert by_name[name]["url"] == f"/channels/{name}/events"
    assert by_name[channel] == {
        "name": channel, "system": False, "subscribers": 0, "last_id": last, "url": f"/channels/{channel}/events",
    }
    for entry in entries:
        assert set(entry) == {"name", "system", "subscribers", "last_id", "url"}


def test_subscriber_counts_go_up_and_back_down(server):
    channel = fresh("count")
    path = f"/channels/{channel}/events"
    assert subscribers(server, channel) == 0
    first = [Subscriber(server, path).connected() for _ in range(3)]
    assert subscribers(server, channel) == 3
    # A multiplexed stream naming the channel is a subscriber too.
    multiplexed = Subscriber(server, f"/events?channel={channel}").connected()
    assert multiplexed.status == 200
    assert subscribers(server, channel) == 4
    # Clients that hang up before any message was published.
    burst = [Subscriber(server, path).connected() for _ in range(6)]
    assert subscribers(server, channel) == 10
    for sub in [*burst, first[0], first[1], multiplexed]:
        sub.close()
    # Nothing is published: the heartbeats (every second here) find the departed clients.
    assert wait_subscribers(server, channel, 1, poke=False), channel_list(server)[channel]
    first[2].close()
    assert wait_subscribers(server, channel, 0)
    assert channel_list(server)[channel]["subscribers"] == 0


def _jobs_channel_events(server, job_id: str, after: str, count: int, headers: dict | None = None) -> list[dict]:
    found: list[dict] = []
    with Subscriber(server, "/channels/jobs/events", {"Last-Event-ID": after, **(headers or {})}) as sub:
        assert sub.connected().status == 200

        def seen(s: Subscriber) -> bool:
            found[:] = [
                {"type": e.type, **envelope(e)} for e in s.parser.events if envelope(e)["data"]["id"] == job_id
            ]
            return len(found) >= count

        assert sub.wait_for(seen, 15), found
    return found


def test_jobs_channel_announces_start_and_end_with_the_job_json(server):
    after = channel_list(server)["jobs"]["last_id"]
    created = HTTP.post(server.url("/jobs"), json={"argv": ["sleep", "0.3"]})
    assert created.status_code == 201, created.text
    job = created.json()
    start, end = _jobs_channel_events(server, job["id"], after, 2)
    final = HTTP.get(server.url(f"/jobs/{job['id']}")).json()
    assert start["type"] == end["type"] == "job"
    assert start["data"]["state"] == "running" and end["data"]["state"] == "exited"
    # At the start: what POST /jobs answered (a running job's duration keeps growing).
    assert {k: v for k, v in start["data"].items() if k != "duration"} == {
        k: v for k, v in job.items() if k != "duration"
    }
    # At the end: exactly what GET /jobs/<id> says now.
    assert end["data"] == final
    assert final["exit_code"] == 0 and final["ended_at"] is not None
    for message in (start, end):
        assert message["user"] == job["owner"]
        _checked_time(message["time"])


def test_jobs_channel_reports_a_failing_command(server):
    after = channel_list(server)["jobs"]["last_id"]
    job = HTTP.post(server.url("/jobs"), json={"argv": ["false"]}).json()
    start, end = _jobs_channel_events(server, job["id"], after, 2)
    assert start["data"]["state"] == "running"
    assert end["data"]["state"] == "exited" and end["data"]["exit_code"] == 1
    assert end["data"] == HTTP.get(server.url(f"/jobs/{job['id']}")).json()


def test_jobs_channel_shows_a_cancelled_job(server):
    after = channel_list(server)["jobs"]["last_id"]
    job = HTTP.post(server.url("/jobs"), json={"argv": ["sleep", "30"]}).json()
    cancelled = HTTP.delete(server.url(f"/jobs/{job['id']}"))
    assert cancelled.status_code == 200, cancelled.text
    start, end = _jobs_channel_events(server, job["id"], after, 2)
    assert start["data"]["state"] == "running"
    assert end["data"]["state"] == "cancelled"
    assert end["data"] == HTTP.get(server.url(f"/jobs/{job['id']}")).json()


def test_server_is_healthy_and_logged_no_errors(server):
    response = httpx.get(server.url("/healthz"))
    assert response.status_code == 200
    log = server.log()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
    assert json.loads(response.text)["status"] == "ok"
