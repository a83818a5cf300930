"""Unit tests for app/streaming/multiplex.py: composite cursors and re-tagged frames, read back by a WHATWG parser."""

from __future__ import annotations

import itertools
import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.store.base import Position
from app.store.eventlog import EventLog
from app.streaming.multiplex import (
    InvalidCursor,
    format_composite,
    missed_field,
    parse_composite,
    retag,
    retag_gap,
    retag_reset,
    source_id_json,
    source_key,
)

from .sse_parser import EventStreamParser

EXAMPLES = 60
NAME_CHARS = string.ascii_letters + string.digits + "_.-"
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=64)
source_keys = st.builds(source_key, st.sampled_from(["job", "channel"]), names)
epochs = st.just("") | st.from_regex(r"\A[0-9a-z]{1,32}\Z")
positions = st.builds(Position, epochs, st.integers(min_value=0, max_value=10**19 - 1))
cursors = st.dictionaries(source_keys, positions, max_size=8)
event_kinds = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,20}\Z").filter(lambda k: k not in ("error", "open"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8), children, max_size=4),
    max_leaves=20,
)


def _parse(frame: bytes, cuts: list[int] | None = None) -> list:
    parser = EventStreamParser()
    edges = [0, *sorted(set(cuts or [])), len(frame)]
    for start, end in itertools.pairwise(edges):
        parser.feed(frame[start:end])
    return parser.events


def _channel_log(epoch: str = "k3x9ab") -> EventLog:
    return EventLog(1 << 20, epoch=epoch, max_events=1000, terminal_kinds=frozenset(), pin_start=False)


# Composite cursors.


def test_source_keys():
    assert source_key("job", "3f2a") == "job:3f2a"
    assert source_key("channel", "chat") == "channel:chat"


@pytest.mark.parametrize("text", [None, ""])
def test_no_cursor_is_empty(text):
    assert parse_composite(text, 3) == {}


@settings(deadline=None, max_examples=EXAMPLES)
@given(cursors)
def test_format_then_parse_round_trips_in_order(value):
    text = format_composite(value.items())
    parsed = parse_composite(text, max(len(value), 1))
    assert parsed == value
    assert list(parsed) == list(value)
    assert text.isascii() and "\n" not in text and "\r" not in text and "\0" not in text


def test_format_example():
    cursors = {"job:3f2a9c": Position("", 120), "channel:chat": Position("k3x9ab", 7)}
    assert format_composite(cursors.items()) == "job:3f2a9c=120,channel:chat=k3x9ab-7"
    assert parse_composite("job:3f2a9c=120,channel:chat=k3x9ab-7", 2) == cursors
    # A bare number for a channel reads as a position without an epoch (the stream answers it with a reset).
    assert parse_composite("channel:chat=7", 1) == {"channel:chat": Position("", 7)}


def test_more_parts_than_sources_is_refused():
    assert parse_composite("channel:a=1,channel:b=2", 2) == {"channel:a": Position("", 1), "channel:b": Position("", 2)}
    with pytest.raises(InvalidCursor):
        parse_composite("channel:a=1,channel:b=2,channel:c=3", 2)
    with pytest.raises(InvalidCursor):
        parse_composite("channel:a=1,channel:b=2", 1)


def test_largest_values():
    assert parse_composite("job:x=" + "9" * 19, 1) == {"job:x": Position("", 10**19 - 1)}
    assert parse_composite("job:x=007", 1) == {"job:x": Position("", 7)}
    assert parse_composite("channel:x=" + "z" * 32 + "-1", 1) == {"channel:x": Position("z" * 32, 1)}
    with pytest.raises(InvalidCursor):
        parse_composite("job:x=" + "1" * 20, 1)
    with pytest.raises(InvalidCursor):
        parse_composite("channel:x=" + "z" * 33 + "-1", 1)


@pytest.mark.parametrize(
    "text",
    [
        "abc", "12", "=", "=1", ",", "channel:a", "channel:a=", "channel:a=x", "channel:a=-1", "channel:a=+1",
        "channel:a=1.5", "channel:a=0x1", "channel:a= 1", "channel:a=1 ", " channel:a=1", "channel: a=1",
        "channel:a =1", "channel:=1", "chan:a=1", "Channel:a=1", "JOB:a=1", "job=1", "job:a:b=1", "channel:a b=1",
        "channel:a/b=1", "channel:é=1", "channel:a=\u0661", "channel:a=\u00b2", "channel:a=\uff11", "channel:a=1,",
        ",channel:a=1", "channel:a=1;channel:b=2", "channel:a==1", "channel:a=1=2", "channel:" + "x" * 65 + "=1",
        "channel:a=1\n", "channel:a=\x001", "channel:a=abc-", "channel:a=-abc", "channel:a=ABC-1", "channel:a=a_b-1",
        "channel:a=a-b-1", "channel:a=abc--1", "channel:a=abc-1.5", "channel:a=abc-\u0661",
    ],
)
def test_garbage_is_refused(text):
    with pytest.raises(InvalidCursor):
        parse_composite(text, 5)


@settings(deadline=None, max_examples=EXAMPLES)
@given(st.text(max_size=40))
def test_parse_never_fails_otherwise(text):
    try:
        parsed = parse_composite(text, 5)
    except InvalidCursor:
        return
    assert all(isinstance(v, Position) and v.offset >= 0 for v in parsed.values())
    assert parse_composite(format_composite(parsed.items()), 5) == parsed


# Re-tagged frames.


@settings(deadline=None, max_examples=3 * EXAMPLES)
@given(json_values, event_kinds, source_keys, cursors, st.lists(st.integers(min_value=0, max_value=2000), max_size=5))
def test_retag_reads_back_with_type_id_and_wrapped_data(payload, kind, source, cursor, cuts):
    epoch = "" if source.startswith("job:") else "k3x9ab"
    log = _channel_log(epoch)
    log.append("message", {"before": True})  # ids that are not 1
    event = log.append(kind, payload)
    position = Position(epoch, event.id)
    composite = format_composite({**cursor, source: position}.items())
    frame = retag(event, source, source_id_json(source, position), composite)
    assert frame.endswith(b"\n\n") and b"\r" not in frame
    (parsed,) = _parse(frame, cuts)
    assert parsed.type == kind
    assert parsed.last_event_id == composite
    own_id = event.id if source.startswith("job:") else f"k3x9ab-{event.id}"
    assert json.loads(parsed.data) == {"source": source, "id": own_id, "data": payload}


def test_retag_of_a_channel_message_keeps_its_envelope_bytes():
    log = _channel_log()
    envelope = {"data": "line one\nline two\r\n\u2028 data: fake\n\nid: 9", "user": "alice", "time": "t"}
    event = log.append("notice", envelope)
    frame = retag(event, "channel:chat", source_id_json("channel:chat", Position("k3x9ab", 1)), "channel:chat=k3x9ab-1")
    (parsed,) = _parse(frame)
    assert (parsed.type, parsed.last_event_id) == ("notice", "channel:chat=k3x9ab-1")
    assert json.loads(parsed.data) == {"source": "channel:chat", "id": "k3x9ab-1", "data": envelope}
    # The original JSON is carried over byte for byte, not re-encoded: it is the event's stored data.
    original = event.frame.split(b"\ndata: ", 1)[1][:-2]
    assert event.data == original
    assert frame.endswith(b',"data":' + original + b"}\n\n")


@settings(deadline=None, max_examples=EXAMPLES)
@given(st.binary(min_size=1, max_size=200), st.text(alphabet=NAME_CHARS, min_size=1, max_size=16))
def test_retag_of_job_output_events(raw, job_id):
    log = EventLog(1 << 20)
    start = log.append("start", {"type": "start", "pid": 1})
    text = raw.decode("utf-8", errors="replace")
    out = log.append("stdout", {"type": "stdout", "out": text}, raw=raw)
    end = log.append("exit", {"type": "exit", "code": 0})
    source = source_key("job", job_id)
    for event, expected_id in ((start, 1), (out, 1 + len(raw)), (end, 2 + len(raw))):
        assert event.id == expected_id
        (parsed,) = _parse(retag(event, source, source_id_json(source, Position("", event.id)), f"{source}={event.id}"))
        assert parsed.type == event.kind
        assert parsed.last_event_id == f"{source}={event.id}"
        data = json.loads(parsed.data)
        assert data["source"] == source and data["id"] == event.id
        assert data["data"] == json.loads(event.frame.split(b"\ndata: ", 1)[1])
    assert json.loads(_parse(retag(out, source, b"1", "x"))[0].data)["data"]["out"] == text


@settings(deadline=None, max_examples=EXAMPLES)
@given(source_keys, st.integers(min_value=1, max_value=10**12), cursors)
def test_retag_gap_reads_back(source, missed, cursor):
    composite = format_composite(cursor.items())
    frame = retag_gap(source, missed, composite)
    (parsed,) = _parse(frame)
    assert parsed.type == "gap"
    assert parsed.last_event_id == composite
    field = "missed_bytes" if source.startswith("job:") else "missed_messages"
    assert json.loads(parsed.data) == {"source": source, field: missed}


@settings(deadline=None, max_examples=EXAMPLES)
@given(source_keys, cursors)
def test_retag_reset_reads_back(source, cursor):
    composite = format_composite(cursor.items())
    (parsed,) = _parse(retag_reset(source, composite))
    assert (parsed.type, parsed.last_event_id) == ("reset", composite)
    assert json.loads(parsed.data) == {"source": source, "missed": "unknown"}


def test_missed_field():
    assert missed_field("job:abc") == "missed_bytes"
    assert missed_field("channel:abc") == "missed_messages"
    assert missed_field("channel:job") == "missed_messages"


def test_frames_of_several_sources_concatenate_into_separate_events():
    chat, jobs = _channel_log(), _channel_log()
    a = chat.append("message", {"data": 1})
    b = jobs.append("job", {"data": {"id": "x"}})
    c = chat.append("message", {"data": 2})
    stream = (
        retag(a, "channel:chat", b'"k3x9ab-1"', "channel:chat=1,channel:jobs=0")
        + retag_gap("channel:jobs", 3, "channel:chat=1,channel:jobs=0")
        + retag(b, "channel:jobs", b'"k3x9ab-4"', "channel:chat=1,channel:jobs=4")
        + retag(c, "channel:chat", b'"k3x9ab-2"', "channel:chat=2,channel:jobs=4")
    )
    parsed = _parse(stream, list(range(0, len(stream), 7)))
    assert [(e.type, e.last_event_id) for e in parsed] == [
        ("message", "channel:chat=1,channel:jobs=0"),
        ("gap", "channel:chat=1,channel:jobs=0"),
        ("job", "channel:chat=1,channel:jobs=4"),
        ("message", "channel:chat=2,channel:jobs=4"),
    ]
    assert [json.loads(e.data)["source"] for e in parsed] == ["channel:chat", "channel:jobs", "channel:jobs",
                                                             "channel:chat"]
