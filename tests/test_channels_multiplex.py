"""GET /events: several jobs and channels on one connection, resumed with one composite Last-Event-ID."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from .channel_support import (
    HTTP,
    Subscriber,
    assert_json_error,
    channel_list,
    epoch,
    fresh,
    id_number,
    publish,
    read_events,
    wait_subscribers,
)
from .server import PYTHON, helper
from .sse_client import collect
from .sse_parser import MessageEvent


def _lines_job(server, prefix: str, count: int, pause: float = 0.02) -> dict:
    specs = [f"{'out' if n % 3 else 'err'}:{f'{prefix} {n}'.encode().hex()}0a:{pause}" for n in range(count)]
    response = HTTP.post(server.url("/jobs"), json={"argv": [PYTHON, helper("emit.py"), *specs]})
    assert response.status_code == 201, response.text
    return response.json()


def _source_id(text: str) -> int | str:
    """A source's own event id as a multiplexed event's data carries it: a job's number, a channel's <epoch>-<n>."""
    return int(text) if text.isdigit() else text


def _n(source_id: int | str) -> int:
    """A source's position as a number (a channel's within its one epoch here)."""
    return source_id if isinstance(source_id, int) else id_number(source_id)


def _own(events: list[MessageEvent]) -> list[tuple[str, int | str, object]]:
    """(type, id, data) of a job's or channel's own stream."""
    return [(e.type, _source_id(e.last_event_id), json.loads(e.data)) for e in events]


def _by_source(events: list[MessageEvent]) -> dict[str, list[tuple[str, int, object]]]:
    grouped: dict[str, list[tuple[str, int, object]]] = {}
    for event in events:
        data = json.loads(event.data)
        assert set(data) == {"source", "id", "data"}, data
        grouped.setdefault(data["source"], []).append((event.type, data["id"], data["data"]))
    return grouped


def _cursor(composite: str) -> dict[str, int | str]:
    cursors = {}
    for part in composite.split(","):
        key, _, value = part.rpartition("=")
        cursors[key] = _source_id(value)
    return cursors


def _finished_job_events(server, job: dict) -> list[MessageEvent]:
    events = collect(server.url(f"/jobs/{job['id']}/events"))
    assert events[-1].type == "exit"
    return events


@pytest.fixture(scope="module")
def world(server):
    """Two finished jobs and a channel with messages of several types."""
    chat = fresh("chat")
    job_a = _lines_job(server, "alpha", 6)
    job_b = _lines_job(server, "beta", 4)
    publish(server, chat, "before", event="notice")
    publish(server, chat, {"n": 2})
    own = {
        f"job:{job_a['id']}": _own(_finished_job_events(server, job_a)),
        f"job:{job_b['id']}": _own(_finished_job_events(server, job_b)),
    }
    publish(server, chat, ["after", 3], event="update")
    own[f"channel:{chat}"] = _own(collect(server.url(f"/channels/{chat}/events"), until="update"))
    assert len(own[f"channel:{chat}"]) == 3
    path = f"/events?job={job_a['id']}&job={job_b['id']}&channel={chat}"
    return {"a": job_a, "b": job_b, "chat": chat, "own": own, "path": path,
            "total": sum(len(events) for events in own.values())}


def test_live_jobs_and_a_channel_arrive_tagged_with_their_source(server):
    chat = fresh("live")
    job_a = _lines_job(server, "one", 8, pause=0.05)
    job_b = _lines_job(server, "two", 5, pause=0.05)
    keys = [f"job:{job_a['id']}", f"job:{job_b['id']}", f"channel:{chat}"]
    with Subscriber(server, f"/events?job={job_a['id']}&job={job_b['id']}&channel={chat}") as sub:
        assert sub.connected().status == 200
        assert sub.headers["content-type"].startswith("text/event-stream")
        for n in range(3):
            publish(server, chat, {"n": n}, event="chat")

        def complete(s: Subscriber) -> bool:
            grouped = _by_source(s.parser.events)
            exits = sum(1 for key in keys[:2] if grouped.get(key) and grouped[key][-1][0] == "exit")
            return exits == 2 and len(grouped.get(keys[2], [])) == 3

        assert sub.wait_for(complete, 15), sub.events
        events = sub.events
    grouped = _by_source(events)
    assert set(grouped) == set(keys)
    # Each source exactly as its own endpoint sends it: same types, ids and data, in order.
    for job, key in ((job_a, keys[0]), (job_b, keys[1])):
        assert grouped[key] == _own(_finished_job_events(server, job))
    assert grouped[keys[2]] == _own(read_events(server, f"/channels/{chat}/events", 3))
    assert [(t, d["data"], d["user"]) for t, _, d in grouped[keys[2]]] == [("chat", {"n": n}, None) for n in range(3)]
    # Every composite id names every source, in the request's order, and its own entry is this event's id.
    seen: dict[str, int | str] = dict.fromkeys(keys, 0)
    for event in events:
        cursor = _cursor(event.last_event_id)
        assert list(cursor) == keys, event.last_event_id
        data = json.loads(event.data)
        assert cursor[data["source"]] == data["id"]
        for key in keys:
            assert _n(cursor[key]) >= _n(seen[key])  # never goes back
        seen = cursor


def test_resume_while_a_job_is_running_loses_and_repeats_nothing(server):
    chat = fresh("mid")
    job = _lines_job(server, "mid", 16, pause=0.05)
    keys = [f"job:{job['id']}", f"channel:{chat}"]
    path = f"/events?job={job['id']}&channel={chat}"
    received: list[MessageEvent] = []
    headers: dict[str, str] = {}
    for round_ in range(3):
        with Subscriber(server, path, headers) as sub:
            assert sub.connected().status == 200
            publish(server, chat, f"live {round_}")
            sub.wait_events(2)  # guaranteed: the job's start or a replayed message, and "live"
            sub.wait_for(lambda s: False, 0.1)  # and whatever output comes meanwhile
            events = sub.events
        received += events
        headers = {"Last-Event-ID": events[-1].last_event_id}
        publish(server, chat, f"while away {round_}")  # must come with the next connection
    with Subscriber(server, path, headers) as sub:
        assert sub.connected().status == 200

        def done(s: Subscriber) -> bool:
            grouped = _by_source(received + s.parser.events)
            return bool(grouped.get(keys[0])) and grouped[keys[0]][-1][0] == "exit" and len(grouped[keys[1]]) == 6

        assert sub.wait_for(done, 15), sub.events
        time.sleep(0.2)
        received += sub.events
    grouped = _by_source(received)
    assert grouped[keys[0]] == _own(_finished_job_events(server, job))
    assert grouped[keys[1]] == _own(read_events(server, f"/channels/{chat}/events", 6))
    assert [d["data"] for _, _, d in grouped[keys[1]]] == [
        "live 0", "while away 0", "live 1", "while away 1", "live 2", "while away 2"]


def test_replay_of_finished_sources_matches_their_own_streams(server, world):
    with Subscriber(server, world["path"]) as sub:
        assert sub.connected().status == 200
        events = sub.wait_events(world["total"])
        time.sleep(0.3)
        assert len(sub.events) == world["total"]
    assert _by_source(events) == world["own"]


def _resume_check(server, world, composite: str, *, via: str) -> None:
    cursor = _cursor(composite)
    # A source the cursor leaves out starts from its beginning.
    expected = {key: [e for e in events if _n(e[1]) > _n(cursor.get(key, 0))] for key, events in world["own"].items()}
    count = sum(len(events) for events in expected.values())
    if via == "header":
        sub = Subscriber(server, world["path"], {"Last-Event-ID": composite})
    else:
        sub = Subscriber(server, world["path"] + "&last_event_id=" + quote(composite, safe=""))
    with sub:
        assert sub.connected().status == 200, bytes(sub.body)
        sub.wait_events(count)
        # A marker proves nothing else was pending: it must be the very next event.
        marker = publish(server, world["chat"], f"marker {composite}", event="marker")
        events = sub.wait_events(count + 1)
    assert len(events) == count + 1, [e.data for e in events]
    resumed = _by_source(events[:count])
    assert {key: value for key, value in resumed.items() if value} == {k: v for k, v in expected.items() if v}
    last = json.loads(events[count].data)
    assert (events[count].type, last["source"], last["id"]) == ("marker", f"channel:{world['chat']}", marker["id"])
    # The marker is now part of the channel: later resumes expect it.
    world["own"][f"channel:{world['chat']}"].append(("marker", marker["id"], last["data"]))


@pytest.mark.parametrize("via", ["header", "query"])
def test_resume_with_the_composite_id_gives_exactly_the_rest_of_every_source(server, world, via):
    with Subscriber(server, world["path"]) as sub:
        assert sub.connected().status == 200
        everything = sub.wait_events(world["total"])
    for index in (0, 1, len(everything) // 3, len(everything) // 2, len(everything) - 2, len(everything) - 1):
        _resume_check(server, world, everything[index].last_event_id, via=via)
        world["total"] += 1  # the marker


def test_hand_written_partial_cursors_resume_each_source(server, world):
    a, b, chat = (f"job:{world['a']['id']}", f"job:{world['b']['id']}", f"channel:{world['chat']}")
    own = world["own"]
    middle_a = own[a][len(own[a]) // 2][1]
    ep = epoch(own[chat][0][1])
    # Any order, any subset of the sources; 0 is the start of any source.
    for composite in (f"{chat}={ep}-1", f"{b}={own[b][-1][1]}", f"{chat}={ep}-2,{a}={middle_a}",
                      f"{a}=0,{b}=0,{chat}=0", f"{b}=1,{a}=1"):
        _resume_check(server, world, composite, via="header")
        world["total"] += 1


def test_header_wins_over_the_query_parameter(server, world):
    a, b = f"job:{world['a']['id']}", f"job:{world['b']['id']}"
    own = world["own"]
    at_end = f"{a}={own[a][-1][1]},{b}={own[b][-1][1]}"
    path = f"/events?job={world['a']['id']}&job={world['b']['id']}"
    from_start = quote(f"{a}=0,{b}=0")  # a valid cursor the header overrides (a malformed one is a 400)
    response = HTTP.get(server.url(path + f"&last_event_id={from_start}"), headers={"Last-Event-ID": at_end})
    assert response.status_code == 204


def test_204_when_every_named_job_is_delivered_to_its_end(server, world):
    a, b = f"job:{world['a']['id']}", f"job:{world['b']['id']}"
    own = world["own"]
    at_end = f"{a}={own[a][-1][1]},{b}={own[b][-1][1]}"
    path = f"/events?job={world['a']['id']}&job={world['b']['id']}"
    for response in (
        HTTP.get(server.url(path), headers={"Last-Event-ID": at_end}),
        HTTP.get(server.url(path + "&last_event_id=" + quote(at_end, safe=""))),
        HTTP.get(server.url(path + "&last_event_id=" + at_end)),  # commas and '=' left unencoded
    ):
        assert response.status_code == 204, response.text
        assert response.content == b""
    # Not every job at its end: the rest of it, and then the response ends.
    partial = f"{a}={own[a][-1][1]},{b}={own[b][1][1]}"
    events = collect(server.url(path), headers={"Last-Event-ID": partial}, until="never", timeout=10)
    assert _by_source(events) == {b: own[b][2:]}
    # Without a cursor: everything, then the end (no 204 for a first connection).
    events = collect(server.url(path), until="never", timeout=10)
    assert _by_source(events) == {a: own[a], b: own[b]}
    # With a channel too: channels never end, so never a 204.
    chat = f"channel:{world['chat']}"
    with_channel = f"{path}&channel={world['chat']}"
    composite = f"{at_end},{chat}={own[chat][-1][1]}"
    with Subscriber(server, with_channel, {"Last-Event-ID": composite}) as sub:
        assert sub.connected().status == 200


def test_one_job_stream_ends_after_its_exit(server, world):
    path = f"/events?job={world['a']['id']}"
    events = collect(server.url(path), until="never", timeout=10)
    assert _by_source(events) == {f"job:{world['a']['id']}": world["own"][f"job:{world['a']['id']}"]}
    assert events[-1].type == "exit"


def test_unknown_jobs_are_404(server, world):
    for query in ("job=0123456789abcdef", f"job={world['a']['id']}&job=ffffffffffffffff",
                  f"channel={world['chat']}&job=nope", "job=", "job=%FF"):
        assert_json_error(HTTP.get(server.url(f"/events?{query}")), 404, "job_not_found")


def test_no_sources_is_400(server):
    for query in ("", "?", "?jobs=1", "?channels=x", "?last_event_id=channel:x=1"):
        assert_json_error(HTTP.get(server.url(f"/events{query}")), 400, "bad_request")


def test_a_cursor_naming_a_source_not_in_the_request_is_400(server, world):
    chat, a = world["chat"], world["a"]["id"]
    other = fresh()
    for path, composite in (
        (f"/events?channel={chat}", f"channel:{other}=1"),
        (f"/events?channel={chat}", f"channel:{chat}=1,job:{a}=2"),
        (f"/events?channel={chat}", f"job:{a}=2"),
        (f"/events?job={a}", f"channel:{chat}=1"),
        (f"/events?job={a}", "job:0123456789abcdef=1"),
    ):
        assert_json_error(HTTP.get(server.url(path), headers={"Last-Event-ID": composite}), 400, "bad_request")
        query = f"{path}&last_event_id={quote(composite, safe='')}"
        assert_json_error(HTTP.get(server.url(query)), 400, "bad_request")


GARBAGE = [
    "abc", "12", "channel:CHAT", "channel:CHAT=", "channel:CHAT=x", "channel:CHAT=-1", "channel:CHAT=+1",
    "channel:CHAT=abc-", "channel:CHAT=-abc", "channel:CHAT=ABC-1", "channel:CHAT=a_b-1", "channel:CHAT=a-b-1",
    "channel:CHAT=" + "a" * 33 + "-1", "channel:CHAT=abc-1.5", "channel:CHAT=abc--1",
    "channel:CHAT=1.5", "channel:CHAT=0x1", "channel:=1", "chan:CHAT=1", "Channel:CHAT=1", "channel:CHAT=1,",
    ",channel:CHAT=1", "channel:CHAT=1,,", "channel: CHAT=1", "channel:CHAT =1",
    "channel:CHAT=1;x", "channel:CHAT=99999999999999999999", "channel:CHAT==1", "channel:CHAT=1=2",
    "channel:CHAT=1,channel:CHAT=2", "channel:CHAT=1\tx", "job:=1", "=1", "=", ",", "channel:" + "x" * 65 + "=1",
]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_composite_ids_are_400(server, world, garbage):
    value = garbage.replace("CHAT", world["chat"])
    path = f"/events?channel={world['chat']}"
    assert_json_error(HTTP.get(server.url(path), headers={"Last-Event-ID": value}), 400, "bad_request")
    assert_json_error(HTTP.get(server.url(f"{path}&last_event_id={quote(value, safe='')}")), 400, "bad_request")


def test_non_ascii_composite_ids_are_400(server, world):
    path = f"/events?channel={world['chat']}"
    value = f"channel:{world['chat']}=\uff11"  # a fullwidth digit
    assert_json_error(HTTP.get(server.url(f"{path}&last_event_id={quote(value)}")), 400, "bad_request")
    response = HTTP.get(server.url(path), headers={"Last-Event-ID": value.encode("utf-8")})
    assert_json_error(response, 400, "bad_request")


def test_too_many_sources_is_400_and_duplicates_count_once(server):
    names = [fresh("many") for _ in range(33)]  # the default max_stream_sources is 32
    too_many = "&".join(f"channel={name}" for name in names)
    assert_json_error(HTTP.get(server.url(f"/events?{too_many}")), 400, "bad_request")
    just_enough = "&".join(f"channel={name}" for name in names[:32])
    with Subscriber(server, f"/events?{just_enough}") as sub:
        assert sub.connected().status == 200
        publish(server, names[31], "hello")
        (event,) = sub.wait_events(1)
        assert json.loads(event.data)["source"] == f"channel:{names[31]}"
        assert len(_cursor(event.last_event_id)) == 32
    assert names[32] not in channel_list(server)  # the refused request created nothing
    repeated = "&".join(f"channel={names[32]}" for _ in range(40))
    with Subscriber(server, f"/events?{repeated}") as sub:
        assert sub.connected().status == 200
        assert channel_list(server)[names[32]]["subscribers"] == 1
        publish(server, names[32], "once")
        sub.wait_events(1)
        time.sleep(0.2)
        events = sub.events
    assert len(events) == 1 and id_number(_cursor(events[0].last_event_id)[f"channel:{names[32]}"]) == 1


def test_a_composite_cursor_beyond_a_channel_end_is_400(server):
    channel = fresh()
    ep = epoch(publish(server, channel, "one")["id"])
    single = HTTP.get(server.url(f"/channels/{channel}/events"), headers={"Last-Event-ID": f"{ep}-5"})
    assert_json_error(single, 400, "bad_request")
    with Subscriber(server, f"/events?channel={channel}", {"Last-Event-ID": f"channel:{channel}={ep}-5"}) as sub:
        sub.connected()
        if sub.status == 200:
            for n in range(2, 8):
                publish(server, channel, n)
            sub.wait_for(lambda s: len(s.parser.events) >= 6, 0.5)
            skipped = 6 - len(sub.events)
            raise AssertionError(f"200, and {skipped} of the next 6 messages were silently skipped")
        assert sub.status == 400


def test_composite_cursors_beyond_any_source_are_400_and_create_nothing(server):
    channel = fresh()
    ep = epoch(publish(server, channel, "one")["id"])
    job = HTTP.post(server.url("/jobs"), json={"argv": ["echo", "hi"]}).json()
    end = _finished_job_events(server, job)[-1].last_event_id
    path = f"/events?job={job['id']}&channel={channel}"
    beyond_job = f"job:{job['id']}={int(end) + 1},channel:{channel}={ep}-1"
    body = assert_json_error(HTTP.get(server.url(path), headers={"Last-Event-ID": beyond_job}), 400, "bad_request")
    assert f"job:{job['id']}" in body["message"]
    beyond_channel = f"job:{job['id']}={end},channel:{channel}={ep}-2"
    body = assert_json_error(HTTP.get(server.url(path), headers={"Last-Event-ID": beyond_channel}), 400)
    assert f"channel:{channel}" in body["message"]
    # A job's id has no epoch.
    with_epoch = f"job:{job['id']}={ep}-1,channel:{channel}={ep}-1"
    assert_json_error(HTTP.get(server.url(path), headers={"Last-Event-ID": with_epoch}), 400, "bad_request")
    # At the end of every source is fine.
    with Subscriber(server, path, {"Last-Event-ID": f"job:{job['id']}={end},channel:{channel}={ep}-1"}) as sub:
        assert sub.connected().status == 200


def test_jobs_channel_through_events(server):
    after = channel_list(server)["jobs"]["last_id"]
    with Subscriber(server, "/events?channel=jobs", {"Last-Event-ID": f"channel:jobs={after}"}) as sub:
        assert sub.connected().status == 200
        job = HTTP.post(server.url("/jobs"), json={"argv": ["true"]}).json()

        def both(s: Subscriber) -> bool:
            return len([e for e in _by_source(s.parser.events).get("channel:jobs", [])
                        if e[2]["data"]["id"] == job["id"]]) == 2

        assert sub.wait_for(both, 10), sub.events
        mine = [e for e in _by_source(sub.events)["channel:jobs"] if e[2]["data"]["id"] == job["id"]]
    assert [(kind, data["data"]["state"]) for kind, _, data in mine] == [("job", "running"), ("job", "exited")]
    assert mine[1][2]["data"] == HTTP.get(server.url(f"/jobs/{job['id']}")).json()


def test_multiplexed_subscribers_are_counted_out_when_they_leave(server):
    channel = fresh()
    before = channel_list(server)["jobs"]["subscribers"]  # earlier tests' streams may still be counted
    subs = [Subscriber(server, f"/events?channel={channel}&channel=jobs").connected() for _ in range(5)]
    assert channel_list(server)[channel]["subscribers"] == 5
    assert channel_list(server)["jobs"]["subscribers"] >= 5
    for sub in subs:
        sub.close()
    assert wait_subscribers(server, channel, 0)
    # One stream, one subscription per source: leaving counts it out of every channel at once.
    assert channel_list(server)["jobs"]["subscribers"] <= before


def test_server_logged_no_errors(server):
    assert HTTP.get(server.url("/healthz")).status_code == 200
    log = server.log()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
