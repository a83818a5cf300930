"""Who may read and write channels, against the real server with token authentication."""

from __future__ import annotations

import json
import time

import pytest

from app.policy.access import hash_token, new_token

from .channel_support import (
    HTTP,
    Subscriber,
    assert_json_error,
    channel_list,
    envelope,
    fresh,
    publish,
    publish_raw,
    read_events,
)
from .server import GunicornServer, wait_until

USERS = {
    "alice": ["operator"],
    "bob": ["operator"],
    "root": ["admin"],
    "vera": ["viewer"],
    "rita": ["runner"],
    "pat": ["public_only"],
    "quinn": ["no_channels"],
}
ROLES = {
    "public_only": {"subscribe": ["public"], "publish": ["public"]},
    "no_channels": {"subscribe": [], "commands": ["true"]},
}
TOKENS = {user: new_token() for user in USERS}


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    entries = [{"user": user, "roles": roles, "hash": hash_token(TOKENS[user])} for user, roles in USERS.items()]
    server = GunicornServer(
        tmp_path_factory.mktemp("auth"),
        {
            "SSECMD_HEARTBEAT_INTERVAL": "1",
            "SSECMD_TOKENS": json.dumps(entries),
            "SSECMD_ROLES": json.dumps(ROLES),
            "SSECMD_AUDIT_LOG": "",
        },
    ).start()
    yield server
    server.stop()


def _finished(srv, user: str, job_id: str) -> dict:
    state: dict = {}

    def done() -> bool:
        state.update(HTTP.get(srv.url(f"/jobs/{job_id}"), headers=auth(user)).json())
        return state.get("ended_at") is not None

    assert wait_until(done, 10), state
    return state


def _start(srv, user: str, argv: list[str]) -> dict:
    response = HTTP.post(srv.url("/jobs"), json={"argv": argv}, headers=auth(user))
    assert response.status_code == 201, response.text
    return response.json()


def test_messages_name_their_sender(srv):
    channel = fresh()
    for user in ("alice", "root", "rita", "bob"):
        publish(srv, channel, f"from {user}", headers=auth(user))
    publish(srv, channel, text="plain text from alice", headers=auth("alice"))
    events = read_events(srv, f"/channels/{channel}/events", 5, auth("vera"))
    assert [(envelope(e)["user"], envelope(e)["data"]) for e in events] == [
        ("alice", "from alice"), ("root", "from root"), ("rita", "from rita"), ("bob", "from bob"),
        ("alice", "plain text from alice"),
    ]


def test_a_viewer_reads_everything_but_cannot_publish(srv):
    channel = fresh()
    publish(srv, channel, "hello", headers=auth("alice"))
    for body, content_type in ((b'{"data": 1}', "application/json"), (b"text", "text/plain")):
        assert_json_error(publish_raw(srv, channel, body, content_type, auth("vera")), 403, "forbidden")
    assert channel in channel_list(srv, auth("vera"))
    assert channel_list(srv, auth("root"))[channel]["last_id"].endswith("-1")
    (event,) = read_events(srv, f"/channels/{channel}/events", 1, auth("vera"))
    assert envelope(event)["data"] == "hello"


def test_a_role_limited_to_one_channel(srv):
    publish(srv, "secret", "classified", headers=auth("root"))
    publish(srv, "public", "hello all", headers=auth("pat"))
    assert_json_error(publish_raw(srv, "secret", b"leak", "text/plain", auth("pat")), 403, "forbidden")
    # Listing shows only what the role may read.
    assert list(channel_list(srv, auth("pat"))) == ["public"]
    assert {"secret", "public", "jobs", "stats"} <= set(channel_list(srv, auth("root")))
    assert channel_list(srv, auth("quinn")) == {}
    # Reading.
    (event,) = read_events(srv, "/channels/public/events", 1, auth("pat"))
    assert envelope(event) | {"time": None} == {"data": "hello all", "user": "pat", "time": None}
    for path in ("/channels/secret/events", "/channels/jobs/events", "/channels/stats/events",
                 "/events?channel=secret", "/events?channel=public&channel=secret", "/events?channel=jobs",
                 f"/channels/{fresh()}/events"):
        assert_json_error(HTTP.get(srv.url(path), headers=auth("pat")), 403, "forbidden")
    for path in ("/channels/public/events", "/events?channel=public"):
        assert_json_error(HTTP.get(srv.url(path), headers=auth("quinn")), 403, "forbidden")
    with Subscriber(srv, "/events?channel=public", auth("pat")) as sub:
        assert sub.connected().status == 200


def test_unauthenticated_publish_publishes_nothing(srv):
    channel = fresh()
    publish(srv, channel, "first", headers=auth("alice"))
    assert_json_error(publish_raw(srv, channel, b"anonymous", "text/plain"), 401)
    assert channel_list(srv, auth("root"))[channel]["last_id"].endswith("-1")


def test_stream_tickets_cannot_read_or_write_channels(srv):
    job = _start(srv, "alice", ["sleep", "5"])
    response = HTTP.post(srv.url(f"/jobs/{job['id']}/tickets"), headers=auth("alice"))
    assert response.status_code == 201, response.text
    ticket = response.json()["ticket"]
    channel = fresh()
    publish(srv, channel, "not for tickets", headers=auth("alice"))
    # The ticket opens its job's events ...
    with Subscriber(srv, f"/jobs/{job['id']}/events?ticket={ticket}") as sub:
        assert sub.connected().status == 200
    # ... and nothing about channels, even alongside a valid token.
    for method, path in (
        ("GET", f"/channels/{channel}/events"),
        ("GET", "/channels/jobs/events"),
        ("GET", "/channels"),
        ("POST", f"/channels/{channel}/messages"),
        ("GET", f"/events?job={job['id']}"),
        ("GET", f"/events?channel={channel}"),
        ("GET", "/events?channel=jobs"),
    ):
        separator = "&" if "?" in path else "?"
        for headers in ({}, auth("alice")):
            response = HTTP.request(method, srv.url(f"{path}{separator}ticket={ticket}"), headers=headers,
                                    content=b"x" if method == "POST" else None)
            assert_json_error(response, 403, "forbidden")
    assert channel_list(srv, auth("root"))[channel]["last_id"].endswith("-1")
    assert HTTP.delete(srv.url(f"/jobs/{job['id']}"), headers=auth("alice")).status_code == 200


def _job_ids(events) -> list[tuple[str, str]]:
    return [(envelope(e)["data"]["id"], envelope(e)["data"]["state"]) for e in events]


def test_jobs_channel_shows_each_user_only_the_jobs_they_may_see(srv):
    after = channel_list(srv, auth("root"))["jobs"]["last_id"]
    resume = {"Last-Event-ID": after}
    with Subscriber(srv, "/channels/jobs/events", {**auth("alice"), **resume}) as live_alice, \
            Subscriber(srv, f"/events?channel=jobs&last_event_id=channel:jobs={after}", auth("alice")) as mux_alice:
        assert live_alice.connected().status == 200 and mux_alice.connected().status == 200
        bobs = _start(srv, "bob", ["sleep", "0.2"])
        alices = _start(srv, "alice", ["sleep", "0.2"])
        _finished(srv, "bob", bobs["id"])
        _finished(srv, "alice", alices["id"])
        live_alice.wait_events(2)
        mux_alice.wait_events(2)
        # Bob's job started first and ended before alice's: had her streams carried it, it would be here by now.
        time.sleep(0.3)
        live, mux = live_alice.events, mux_alice.events
    mine = [(alices["id"], "running"), (alices["id"], "exited")]
    bobs_events = [(bobs["id"], "running"), (bobs["id"], "exited")]
    assert _job_ids(live) == mine
    assert [(json.loads(e.data)["data"]["data"]["id"], json.loads(e.data)["data"]["data"]["state"])
            for e in mux] == mine
    # Replays: owners see their own jobs, admin and viewer see every job.
    readers = {user: Subscriber(srv, "/channels/jobs/events", {**auth(user), **resume})
               for user in ("alice", "bob", "root", "vera")}
    try:
        for sub in readers.values():
            assert sub.connected().status == 200
        time.sleep(0.3)
        seen = {user: _job_ids(sub.events) for user, sub in readers.items()}
        everything = readers["root"].events
    finally:
        for sub in readers.values():
            sub.close()
    assert seen["alice"] == mine
    assert seen["bob"] == bobs_events
    for user in ("root", "vera"):
        assert sorted(seen[user]) == sorted(mine + bobs_events), user
        assert seen[user].index(bobs_events[0]) < seen[user].index(bobs_events[1])
    # The announcements name the job's owner.
    for event in everything:
        assert envelope(event)["user"] == envelope(event)["data"]["owner"]


def test_auth_server_logged_no_errors(srv):
    log = srv.log()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]


def test_refused_requests_create_no_channel(srv):
    names = [fresh("refused") for _ in range(3)]
    assert_json_error(HTTP.get(srv.url(f"/channels/{names[0]}/events"), headers=auth("pat")), 403)
    assert_json_error(publish_raw(srv, names[1], b"x", "text/plain", auth("pat")), 403)
    assert_json_error(publish_raw(srv, names[2], b"x", "text/plain", auth("vera")), 403)
    assert not set(names) & set(channel_list(srv, auth("root"))), "refused requests created channels"
