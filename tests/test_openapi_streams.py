"""The endless streams against the contract's event shapes: what schemathesis cannot read (it waits for the end).

A channel's stream and GET /events (with a channel) never end by themselves, so tests/test_openapi_fuzz.py
leaves them out. Here a real server's events of every documented kind (messages, `job` and `stats` events
of the system channels, `reset`, `gap`, and their multiplexed forms) are read for a moment and each is
checked as schemathesis checks the streams that end: the event against the stream's schema, and the JSON
in its data against the `contentSchema` its type selects.
"""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app.http.openapi import document

from .channel_support import Subscriber, channel_list, fresh, publish, read_events
from .job_support import post_job, wait_final
from .server import GunicornServer
from .sse_parser import MessageEvent

DOCUMENT_URI = "urn:sse-commander:openapi"
REGISTRY = Registry().with_resource(DOCUMENT_URI, Resource.from_contents(document(), DRAFT202012))


def validator(schema: dict) -> Draft202012Validator:
    """A validator for a schema of the document, its $refs (``#/components/...``) resolved in the document."""
    absolute = json.loads(json.dumps(schema).replace('"#/components/', f'"{DOCUMENT_URI}#/components/'))
    return Draft202012Validator(absolute, registry=REGISTRY)


def check(events: list[MessageEvent], stream: str) -> None:
    """Each event as the named stream schema (JobStreamEvent, ChannelStreamEvent, ...) documents it."""
    schema = document()["components"]["schemas"][stream]
    for event in events:
        instance = {"event": event.type, "data": event.data, "id": event.last_event_id}
        validator(schema).validate(instance)
        chosen = [rule["then"]["properties"]["data"]["contentSchema"] for rule in schema["allOf"]
                  if validator(rule["if"]).is_valid(instance)]
        assert len(chosen) == 1, (event, chosen)  # every type has exactly one documented data shape
        validator(chosen[0]).validate(json.loads(event.data))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """Short channel histories (for gaps) and frequent stats."""
    server = GunicornServer(tmp_path_factory.mktemp("openapi-streams"), {
        "SSECMD_CHANNEL_HISTORY": "2", "SSECMD_STATS_INTERVAL": "0.2", "SSECMD_HEARTBEAT_INTERVAL": "1",
    }).start()
    yield server
    server.stop()


def test_channel_messages_reset_and_gap(srv: GunicornServer):
    name = fresh("contract")
    publish(srv, name, {"nested": [1, "two", None]}, event="notice")
    publish(srv, name, text="plain text")
    newest = publish(srv, name, 3)["id"]
    first = newest.rsplit("-", 1)[0] + "-1"  # retained: messages 2 and 3 only
    events = read_events(srv, f"/channels/{name}/events", 3, headers={"Last-Event-ID": "41"})
    assert [e.type for e in events] == ["reset", "message", "message"]
    events += read_events(srv, f"/channels/{name}/events", 3, headers={"Last-Event-ID": first[:-1] + "0"})
    assert events[3].type == "gap"
    check(events, "ChannelStreamEvent")


def test_system_channels_job_and_stats_events(srv: GunicornServer):
    with Subscriber(srv, "/channels/jobs/events") as sub:
        sub.connected()
        job = post_job(srv, {"argv": ["echo", "hi"]})
        wait_final(srv, job["id"], 10)
        events = sub.wait_events(2, 10)
    assert [e.type for e in events[:2]] == ["job", "job"]
    events += read_events(srv, "/channels/stats/events", 1)
    assert events[-1].type == "stats"
    check(events, "ChannelStreamEvent")


def test_multiplexed_events(srv: GunicornServer):
    name = fresh("contract")
    for n in range(3):
        publish(srv, name, n)
    job = post_job(srv, {"argv": ["echo", "hi"]})
    wait_final(srv, job["id"], 10)
    epoch = channel_list(srv)[name]["last_id"].rsplit("-", 1)[0]
    events = read_events(srv, f"/events?job={job['id']}&channel={name}&channel=jobs", 8,
                         headers={"Last-Event-ID": f"channel:{name}={epoch}-0,channel:jobs=41"})
    kinds = {e.type for e in events}
    assert {"start", "stdout", "exit", "gap", "reset"} <= kinds, events
    check(events, "MultiplexedStreamEvent")
