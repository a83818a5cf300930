"""The one SSE response loop (app/streaming/response.py) in-process, over a MemoryStore: frames, gaps, resets.

The real-server tests (test_channels*.py, test_resume.py, test_direct_delivery.py) cover the same loop behind
gunicorn; these pin what is easiest to see frame by frame.
"""

from __future__ import annotations

import json

import gevent
import pytest
from gevent.event import Event

from app.config import Settings
from app.store.base import START, Position, channel_key, job_key
from app.store.memory import MemoryStore
from app.streaming.delivery import DirectDelivery
from app.streaming.response import EventStreams, Source
from app.streaming.tracker import StreamTracker
from app.streaming.wire import NO_WIRE

from .sse_parser import EventStreamParser


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(max_running=4, buffer_bytes=1 << 20, max_finished=4, finished_ttl=60, channel_history=2)


def _streams(store: MemoryStore, shutdown: Event | None = None) -> EventStreams:
    shutdown = shutdown if shutdown is not None else Event()
    delivery = DirectDelivery(shutdown)
    store.set_listener(delivery)
    return EventStreams(store, delivery, StreamTracker(30), Settings(heartbeat_interval=5, kill_grace=0.2), shutdown)


def _events(body: bytes) -> list:
    return EventStreamParser().feed(body)


def test_a_channel_gap_comes_before_a_retained_message_named_start(store):
    # Only a job pins its start event; on a channel "start" is an ordinary name and the gap goes first.
    for n, kind in enumerate(["message", "message", "message", "start", "message"]):
        store.append(channel_key("c"), kind, {"n": n})
    stream = _streams(store).open([Source(channel_key("c"), START)], NO_WIRE, "test")
    body = next(stream)
    stream.close()
    assert [(e.type, e.data) for e in _events(body)] == [
        ("gap", '{"missed_messages":3}'), ("start", '{"n":3}'), ("message", '{"n":4}'),
    ]


def test_a_resume_from_another_epoch_is_a_reset_then_the_retained_history(store):
    key = channel_key("ops")
    for n in range(3):
        store.append(key, "message", {"n": n})
    epoch = store.peek_channel("ops").epoch
    for cursor in (Position("zzzzzz", 41), Position("", 41)):  # another epoch; a bare number from before epochs
        stream = _streams(store).open([Source(key, cursor)], NO_WIRE, "test")
        body = next(stream)
        stream.close()
        assert body.startswith(b"retry: 2000\n\n: connected\n\n")
        events = _events(body)
        # The reset's id is where the replay begins (channel_history=2 keeps messages 2 and 3).
        assert [(e.type, e.last_event_id) for e in events] == [
            ("reset", f"{epoch}-1"), ("message", f"{epoch}-2"), ("message", f"{epoch}-3"),
        ]
        assert json.loads(events[0].data) == {"missed": "unknown"}


def test_a_stream_from_the_start_follows_live_in_the_channels_epoch_without_repeats(store):
    key = channel_key("live")
    store.ensure_channel("live")
    epoch = store.peek_channel("live").epoch
    stream = _streams(store).open([Source(key, START)], NO_WIRE, "test")
    assert next(stream) == b"retry: 2000\n\n: connected\n\n"
    received = []
    for n in range(3):
        gevent.spawn_later(0.02, store.append, key, "message", {"n": n})
        received += _events(next(stream))
    stream.close()
    assert [(e.type, e.last_event_id, e.data) for e in received] == [
        ("message", f"{epoch}-{n + 1}", f'{{"n":{n}}}') for n in range(3)
    ]


def test_multiplexed_sources_are_retagged_and_a_channel_of_another_epoch_is_reset(store):
    job = store.create_job(["echo"], 10, "jobs", owner="alice")
    log = store.local_log(job.id)
    log.append("start", {"type": "start"})
    log.append("exit", {"type": "exit", "code": 0})
    chat = channel_key("chat")
    store.append(chat, "message", {"data": "hi"})
    epoch = store.peek_channel("chat").epoch
    sources = [Source(job_key(job.id), START), Source(chat, Position("old", 7))]
    stream = _streams(store).open(sources, NO_WIRE, "test", multiplexed=True)
    events = _events(next(stream))
    stream.close()
    assert [(e.type, e.last_event_id) for e in events] == [
        ("start", f"job:{job.id}=1,channel:chat=old-7"),
        ("exit", f"job:{job.id}=2,channel:chat=old-7"),
        ("reset", f"job:{job.id}=2,channel:chat={epoch}-0"),
        ("message", f"job:{job.id}=2,channel:chat={epoch}-1"),
    ]
    data = [json.loads(e.data) for e in events]
    assert data[1] == {"source": f"job:{job.id}", "id": 2, "data": {"type": "exit", "code": 0}}
    assert data[2] == {"source": "channel:chat", "missed": "unknown"}
    assert data[3]["source"] == "channel:chat" and data[3]["id"] == f"{epoch}-1"


def test_shutdown_ends_a_channel_stream_with_a_jittered_retry(store):
    shutdown = Event()
    store.ensure_channel("c")
    stream = _streams(store, shutdown).open([Source(channel_key("c"), START)], NO_WIRE, "test")
    next(stream)
    gevent.spawn_later(0.02, shutdown.set)
    farewell = next(stream)
    assert farewell.startswith(b"retry: ") and b"server restarting" in farewell
    with pytest.raises(StopIteration):
        next(stream)
    stream.close()
