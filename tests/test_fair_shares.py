"""Fair shares between users: running jobs, publishing, subscriptions, and who may fill or hold the channel hub."""

from __future__ import annotations

import json

import httpx
import pytest

from app.config import Settings
from app.policy.access import hash_token, new_token
from app.policy.messages import SYSTEM_CHANNELS

from .server import GunicornServer, wait_until
from .stream_support import StreamCrowd, connected

USERS = {"alice": ["operator"], "bob": ["operator"], "carol": ["operator"], "root": ["admin"], "vera": ["viewer"],
         "walt": ["viewer"]}
TOKENS = {user: new_token() for user in USERS}
USER_CHANNELS = 5
SUBSCRIPTIONS = 6


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


def _settings() -> dict[str, str]:
    entries = [{"user": user, "roles": roles, "hash": hash_token(TOKENS[user])} for user, roles in USERS.items()]
    return {
        "SSECMD_TOKENS": json.dumps(entries),
        "SSECMD_AUDIT_LOG": "",
        "SSECMD_HEARTBEAT_INTERVAL": "60",
        "SSECMD_MAX_RUNNING_JOBS": "8",  # a quarter each: 2
        "SSECMD_PUBLISH_RATE_PER_MINUTE": "6",
        "SSECMD_PUBLISH_RATE_BURST": "5",
        "SSECMD_MAX_SUBSCRIPTIONS_PER_USER": str(SUBSCRIPTIONS),
        "SSECMD_MAX_CHANNELS": str(len(SYSTEM_CHANNELS) + USER_CHANNELS),
    }


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = GunicornServer(tmp_path_factory.mktemp("shares"), _settings()).start()
    yield server
    server.stop()


@pytest.fixture
def http(srv):
    with httpx.Client(base_url=srv.base_url, timeout=15) as client:
        yield client


@pytest.fixture
def hub_srv(make_server):
    """A server of its own, for the tests about which channels exist."""
    return make_server(_settings())


@pytest.fixture
def hub_http(hub_srv):
    with httpx.Client(base_url=hub_srv.base_url, timeout=15) as client:
        yield client


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    return body


def _start(http: httpx.Client, user: str) -> httpx.Response:
    return http.post("/jobs", json={"argv": ["sleep", "30"]}, headers=auth(user))


def test_one_user_cannot_take_every_job_slot(http):
    mine = [_start(http, "alice") for _ in range(2)]
    assert [r.status_code for r in mine] == [201, 201]
    refused = _start(http, "alice")
    body = _error(refused, 429, "too_many_jobs")
    assert "alice" in body["message"] and refused.headers["Retry-After"]
    # Others still get their share, and admins are not held to one.
    others = [_start(http, "bob"), *(_start(http, "root") for _ in range(3))]
    assert [r.status_code for r in others] == [201] * 4
    # A slot of alice's own comes back when one of her jobs ends.
    assert http.delete(f"/jobs/{mine[0].json()['id']}", headers=auth("alice")).status_code == 200
    again = _start(http, "alice")
    assert again.status_code == 201
    for response in [mine[1], again, *others]:
        http.delete(f"/jobs/{response.json()['id']}", headers=auth("root"))


def test_the_default_share_is_a_quarter_of_max_running_jobs():
    assert Settings().user_job_limit == 8
    assert Settings(max_running_jobs=3).user_job_limit == 1
    assert Settings(max_running_jobs=32, max_running_jobs_per_user=20).user_job_limit == 20


def test_publishing_is_rate_limited_per_user(http):
    sent = [http.post("/channels/chatter/messages", json={"data": n}, headers=auth("carol")) for n in range(5)]
    assert {r.status_code for r in sent} == {201}
    refused = http.post("/channels/chatter/messages", json={"data": "one too many"}, headers=auth("carol"))
    _error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    assert http.post("/channels/chatter/messages", json={"data": "mine"}, headers=auth("bob")).status_code == 201


def _refused_stream(srv: GunicornServer, path: str, user: str, code: str = "too_many_subscriptions") -> dict:
    with httpx.stream("GET", srv.url(path), headers=auth(user), timeout=10) as response:
        assert response.status_code == 429, f"{path}: {response.status_code}, not refused"
        response.read()
        return _error(response, 429, code)


def test_subscriptions_are_counted_per_user(srv):
    with StreamCrowd(srv.port) as crowd:
        held = [
            *crowd.open("/events?channel=jobs&channel=stats&channel=chatter&channel=s1", 1, auth("vera")),
            *crowd.open("/channels/jobs/events", 2, auth("vera")),
        ]
        assert crowd.wait_for(held, connected, timeout=10)  # 4 + 2 subscriptions: vera's whole share
        body = _refused_stream(srv, "/channels/stats/events", "vera")
        assert "vera" in body["message"]
        _refused_stream(srv, "/events?channel=jobs", "vera")
        # Another user has a share of their own; an admin has none to run out of.
        others = [*crowd.open("/channels/jobs/events", 1, auth("walt")),
                  *crowd.open("/channels/jobs/events", SUBSCRIPTIONS + 1, auth("root"))]
        assert crowd.wait_for(others, connected, timeout=10)
        # Closing a stream gives its subscriptions back.
        crowd.close(held[:1])
        assert wait_until(lambda: _subscribes(crowd, "vera"), 10)


def _subscribes(crowd: StreamCrowd, user: str) -> bool:
    stream = crowd.open("/channels/stats/events", 1, auth(user))
    return crowd.wait_for(stream, lambda s: s.status is not None, timeout=5) and stream[0].status == 200


def _channels(http: httpx.Client) -> set[str]:
    listed = http.get("/channels", headers=auth("root")).json()["channels"]
    return {c["name"] for c in listed if not c["system"]}


def test_a_viewer_can_neither_fill_the_hub_nor_hold_it_full(hub_srv, hub_http):
    srv, http = hub_srv, hub_http
    with StreamCrowd(srv.port) as crowd:
        names = [f"watch{n}" for n in range(USER_CHANNELS)]
        # Creating while there is room is fine (the others are idle); walt's subscriptions do not keep these.
        watching = [crowd.open(f"/channels/{name}/events", 1, auth("walt"))[0] for name in names]
        assert crowd.wait_for(watching, connected, timeout=10)
        assert set(names) <= _channels(http)
        # A viewer never makes room by forgetting another channel ...
        _refused_stream(srv, "/channels/one-more/events", "walt", "too_many_channels")
        # ... but a publisher does, and can: the viewer's channels are not held for them.
        assert http.post("/channels/news/messages", json={"data": 1}, headers=auth("alice")).status_code == 201
        assert "news" in _channels(http) and "watch0" not in _channels(http)
        # The viewer who still reads a forgotten channel stays on it: written again, it comes back with its ids.
        posted = http.post("/channels/watch0/messages", json={"data": "back"}, headers=auth("alice"))
        assert posted.status_code == 201 and posted.json()["id"].endswith("-1")
        assert crowd.wait_for(watching[:1], lambda s: b'"back"' in s.received, timeout=10)
        assert "watch0" in _channels(http)


def test_a_publishers_subscription_keeps_its_channel(hub_srv, hub_http):
    srv, http = hub_srv, hub_http
    with StreamCrowd(srv.port) as crowd:
        room = crowd.open("/channels/alices-room/events", 1, auth("alice"))
        assert crowd.wait_for(room, connected, timeout=10)
        for n in range(USER_CHANNELS + 2):  # more new channels than there is room for
            http.post(f"/channels/churn{n}/messages", json={"data": n}, headers=auth("bob"))
        assert "alices-room" in _channels(http)
