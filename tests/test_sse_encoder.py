"""app/streaming/sse.py: every frame the encoder writes parses, with a spec-following parser, into what was meant."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.streaming import _jsonescape
from app.streaming.sse import (
    HEARTBEAT,
    dumps,
    encode_comment,
    encode_event,
    encode_json_event,
    encode_retry,
    json_string_body,
    output_json,
)

from .sse_parser import EventStreamParser, MessageEvent

FAST = settings(max_examples=100, deadline=None)

# st.text() excludes surrogates; add the characters that matter to SSE framing explicitly.
SPECIAL = st.sampled_from(["\r", "\n", "\r\n", "\n\r", "\0", "\u2028", "\u2029", "\x85", "\ufeff", " ", ":", "\ufffd"])
TEXT = st.lists(st.one_of(st.text(max_size=8), SPECIAL), max_size=12).map("".join)
DECODED_BYTES = st.binary(max_size=64).map(lambda b: b.decode("utf-8", errors="replace"))
EVENT_IDS = st.integers(min_value=0, max_value=2**63)
NO_CR = re.compile(r"\r\n?")


def field_value(min_size: int = 0):
    """Text allowed in an ``id`` or ``event`` field: no CR, LF or NUL."""
    return st.text(
        st.characters(exclude_characters="\r\n\0", exclude_categories=("Cs",)), min_size=min_size, max_size=20
    )


def parse_chunked(frame: bytes, cuts: list[int]) -> EventStreamParser:
    parser = EventStreamParser()
    previous = 0
    for cut in [*sorted(cuts), len(frame)]:
        parser.feed(frame[previous:cut])
        previous = cut
    return parser


def cuts_for(frame: bytes):
    return st.lists(st.integers(min_value=0, max_value=len(frame)), max_size=10)


def only_event(parser: EventStreamParser) -> MessageEvent:
    assert len(parser.events) == 1, parser.events
    return parser.events[0]


# encode_event: plain text data.


@FAST
@given(data=st.data(), text=st.one_of(TEXT, DECODED_BYTES).map(lambda t: t.replace("\r", "")), event_id=EVENT_IDS)
@example(data=None, text="", event_id=0)
@example(data=None, text="\n", event_id=1)
@example(data=None, text=" leading space\n\ttab\n\0nul\u2028ls\n", event_id=2)
@example(data=None, text="data: not a field\n\nid: 9\nevent: x", event_id=3)
def test_encode_event_round_trips_text_without_cr_in_any_chunking(data, text, event_id):
    frame = encode_event(text, event="stdout", event_id=event_id)
    cuts = [] if data is None else data.draw(cuts_for(frame), label="cuts")
    event = only_event(parse_chunked(frame, cuts))
    assert event == MessageEvent("stdout", text, str(event_id))


@FAST
@given(data=st.data(), text=st.one_of(TEXT, DECODED_BYTES), event_id=EVENT_IDS)
@example(data=None, text="a\r\nb\rc\n\r", event_id=5)
def test_encode_event_delivers_cr_and_crlf_as_lf_and_nothing_else_changes(data, text, event_id):
    # SSE data cannot carry CR: each CR, CRLF or LF becomes one LF, as encode_event documents.
    frame = encode_event(text, event="stdout", event_id=event_id)
    assert b"\r" not in frame
    cuts = [] if data is None else data.draw(cuts_for(frame), label="cuts")
    event = only_event(parse_chunked(frame, cuts))
    assert event == MessageEvent("stdout", NO_CR.sub("\n", text), str(event_id))


@FAST
@given(text=TEXT, event=field_value(min_size=1).filter(lambda e: e not in ("error", "open")), event_id=field_value())
def test_event_type_and_string_id_are_preserved(text, event, event_id):
    frame = encode_event(text, event=event, event_id=event_id)
    event_out = only_event(parse_chunked(frame, []))
    assert (event_out.type, event_out.last_event_id) == (event, event_id)


def test_frame_layout():
    assert encode_event("a\nb", event="stdout", event_id=7) == b"id: 7\nevent: stdout\ndata: a\ndata: b\n\n"
    assert encode_event("x") == b"data: x\n\n"
    assert encode_event("") == b"data: \n\n"


def test_event_without_type_is_a_message_and_without_id_keeps_previous_id():
    parser = EventStreamParser()
    parser.feed(encode_event("one", event_id=3) + encode_event("two"))
    assert parser.events == [MessageEvent("message", "one", "3"), MessageEvent("message", "two", "3")]


def test_frame_is_utf8_without_bom():
    frame = encode_event("\ufeff\u20ac", event="stdout", event_id=1)
    assert not frame.startswith(b"\xef\xbb\xbf")
    assert frame.decode("utf-8").endswith("data: \ufeff\u20ac\n\n")


@pytest.mark.parametrize("bad", ["1\n", "1\r", "1\r\n", "\n", "a\0b", "\0"])
def test_id_with_cr_lf_or_nul_is_refused(bad):
    with pytest.raises(ValueError):
        encode_event("x", event="stdout", event_id=bad)


@pytest.mark.parametrize("bad", ["std\nout", "stdout\r", "a\r\nb", "a\0", "", "error", "open"])
def test_bad_or_reserved_event_type_is_refused(bad):
    with pytest.raises(ValueError):
        encode_event("x", event=bad, event_id=1)


@FAST
@given(
    prefix=field_value(),
    bad=st.sampled_from(["\r", "\n", "\0"]),
    suffix=field_value(),
    field=st.sampled_from(["event", "event_id"]),
)
def test_any_field_value_with_cr_lf_or_nul_is_refused(prefix, bad, suffix, field):
    with pytest.raises(ValueError):
        encode_event("x", **{"event": "stdout", field: prefix + bad + suffix})
    with pytest.raises(ValueError):
        encode_json_event({"out": "x"}, **{"event": "stdout", field: prefix + bad + suffix})


@pytest.mark.parametrize("similar", ["Error", "errors", "opened", "message", "err", "exit"])
def test_names_near_the_reserved_ones_are_accepted(similar):
    assert only_event(parse_chunked(encode_event("x", event=similar), [])).type == similar


# encode_json_event and dumps.


@FAST
@given(data=st.data(), text=st.one_of(TEXT, DECODED_BYTES), event_id=EVENT_IDS)
@example(data=None, text="50%\r60%\r70%\n", event_id=1)
@example(data=None, text="\r\n\r\n", event_id=2)
@example(data=None, text="\0\x1b[31mred\u2028\u2029\x85", event_id=3)
def test_json_event_round_trips_any_text_in_any_chunking(data, text, event_id):
    frame = encode_json_event({"out": text}, event="stdout", event_id=event_id)
    cuts = [] if data is None else data.draw(cuts_for(frame), label="cuts")
    event = only_event(parse_chunked(frame, cuts))
    assert (event.type, event.last_event_id) == ("stdout", str(event_id))
    assert json.loads(event.data) == {"out": text}


@FAST
@given(text=st.one_of(TEXT, DECODED_BYTES))
def test_json_event_is_one_data_line(text):
    frame = encode_json_event({"out": text}, event="stdout", event_id=1)
    lines = frame.split(b"\n")
    assert lines[-2:] == [b"", b""]
    assert sum(line.startswith(b"data: ") for line in lines) == 1
    assert b"\r" not in frame


@settings(max_examples=100, deadline=None)
@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | TEXT,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
        max_leaves=10,
    )
)
def test_dumps_never_contains_cr_or_lf_and_round_trips(payload):
    text = dumps(payload)
    assert "\r" not in text and "\n" not in text
    assert json.loads(text) == payload


def test_dumps_is_compact_and_keeps_non_ascii():
    assert dumps({"out": "\u20ac", "n": [1, 2]}) == '{"out":"\u20ac","n":[1,2]}'


# The fast encoder for command output must write exactly what json.dumps writes.

OUTPUT_TEXT = st.one_of(
    TEXT,
    DECODED_BYTES,
    st.text(st.sampled_from('ab"\\/\x1b\x00\x7f\t\b\x0c\r\n\u00e9\u2028\U0001f600'), max_size=40),
)


@FAST
@given(OUTPUT_TEXT, st.sampled_from(["stdout", "stderr"]))
@example("\\n", "stdout")
@example('\\"', "stdout")
@example("\x1b[1;31mred\x1b[0m\r\n", "stderr")
def test_output_json_is_byte_for_byte_what_dumps_writes(text, kind):
    assert output_json(kind, text.encode("utf-8")).encode() == dumps({"type": kind, "out": text}).encode("utf-8")


@FAST
@given(OUTPUT_TEXT, EVENT_IDS)
def test_output_json_frame_equals_the_dict_frame(text, event_id):
    fast = encode_json_event(output_json("stdout", text.encode("utf-8")), event="stdout", event_id=event_id)
    assert fast == encode_json_event({"type": "stdout", "out": text}, event="stdout", event_id=event_id)


@FAST
@given(st.binary(min_size=200, max_size=3000))
def test_json_string_body_of_long_output_matches_dumps(data):
    text = data.decode("utf-8", errors="replace")
    expected = dumps(text).encode("utf-8")[1:-1]  # without the quotes
    assert json_string_body(text.encode("utf-8")) == expected
    assert json_string_body(bytearray(text.encode("utf-8"))) == expected


@FAST
@given(OUTPUT_TEXT, st.integers(min_value=1, max_value=2**63), st.sampled_from(["stdout", "stderr", 'odd "kind"\\']))
def test_output_frame_in_one_c_call_equals_the_general_encoder(text, event_id, kind):
    # The hot path (int id, OutputJSON) is built by escape_between; the general path joins parts.
    fast = encode_json_event(output_json(kind, text.encode("utf-8")), event=kind, event_id=event_id)
    general = encode_json_event(output_json(kind, text.encode("utf-8")), event=kind, event_id=str(event_id))
    assert fast == general
    assert fast == encode_json_event({"type": kind, "out": text}, event=kind, event_id=event_id)


def test_output_frame_refuses_a_reserved_event_type_and_a_line_break_in_it():
    for event in ("error", "open", "", "std\nout"):
        with pytest.raises(ValueError):
            encode_json_event(output_json("stdout", b"x"), event=event, event_id=1)


def test_escape_between_takes_bytes_only():
    assert _jsonescape.escape_between(b"<", b'a"\x01', b">") == b'<a\\"\\u0001>'
    for args in ((b"", "text", b""), (b"", b"x"), (bytearray(b""), b"x", b"")):
        with pytest.raises(TypeError):
            _jsonescape.escape_between(*args)


def test_json_string_body_leaves_plain_text_as_it_is():
    text = b"plain text, no escapes: \xc3\xa9 \x7f"
    assert json_string_body(text) is text


def test_json_event_refuses_reserved_type():
    with pytest.raises(ValueError):
        encode_json_event({"out": "x"}, event="error", event_id=1)


# Several frames in one stream, with comments, retry and heartbeats between them.


@FAST
@given(data=st.data(), texts=st.lists(st.one_of(TEXT, DECODED_BYTES), min_size=1, max_size=6))
def test_stream_of_frames_comments_and_heartbeats_dispatches_exactly_the_events(data, texts):
    stream = encode_retry(2000) + encode_comment("connected")
    for index, text in enumerate(texts, start=1):
        stream += encode_json_event({"out": text}, event="stdout", event_id=index)
        if index % 2:
            stream += HEARTBEAT + encode_comment(text)
    cuts = data.draw(cuts_for(stream), label="cuts")
    parser = parse_chunked(stream, cuts)
    assert [(e.type, json.loads(e.data)["out"], e.last_event_id) for e in parser.events] == [
        ("stdout", text, str(index)) for index, text in enumerate(texts, start=1)
    ]
    assert parser.retry == 2000


# encode_comment and HEARTBEAT.


def test_heartbeat_is_a_non_empty_comment_block():
    assert HEARTBEAT.startswith(b":") and HEARTBEAT.endswith(b"\n\n")
    parser = parse_chunked(HEARTBEAT, [])
    assert parser.events == [] and parser.comments == [" ping"]


def test_comment_layout():
    assert encode_comment() == b":\n\n"
    assert encode_comment("connected") == b": connected\n\n"
    assert encode_comment("a\nb") == b": a\n: b\n\n"


@FAST
@given(data=st.data(), text=st.one_of(TEXT, DECODED_BYTES))
@example(data=None, text="data: fail\nid: 9\nretry: 1\nevent: x\n\n")
@example(data=None, text="\r\n\r\n")
def test_comments_never_dispatch_and_change_nothing(data, text):
    frame = encode_comment(text)
    cuts = [] if data is None else data.draw(cuts_for(frame), label="cuts")
    parser = parse_chunked(b"id: 1\n\n" + frame + b"data: after\n\n", [c + 7 for c in cuts])
    assert parser.events == [MessageEvent("message", "after", "1")]
    assert parser.retry is None
    # Every line of the text is one comment (one leading space is added, empty lines get none).
    assert parser.comments == [f" {line}" if line else "" for line in NO_CR.sub("\n", text).split("\n")]


def test_comment_between_data_lines_does_not_end_the_event():
    parser = parse_chunked(b"data: a\n" + encode_comment("ping")[:-1] + b"data: b\n\n", [])
    assert [e.data for e in parser.events] == ["a\nb"]


# encode_retry.


@FAST
@given(ms=st.integers(min_value=0, max_value=10**12))
def test_retry_is_digits_only_and_sets_reconnection_time(ms):
    frame = encode_retry(ms)
    assert re.fullmatch(rb"retry: [0-9]+\n\n", frame)
    parser = parse_chunked(frame, [])
    assert parser.retry == ms and parser.events == []


@pytest.mark.parametrize("bad", [-1, -2000])
def test_negative_retry_is_refused(bad):
    with pytest.raises(ValueError):
        encode_retry(bad)


def test_retry_then_comment_is_the_first_frame_shape():
    parser = parse_chunked(encode_retry(1500) + encode_comment("connected"), [])
    assert parser.retry == 1500 and parser.events == [] and parser.comments == [" connected"]


@FAST
@given(st.binary(max_size=300).map(lambda data: bytes(b & 0x7F for b in data)), st.binary(max_size=3),
       st.binary(max_size=3))
@example(b'\\"\x00\x1f\x7f\t\b\x0c\r\n', b"", b"")
@example(b"x" * 40 + b"\n" + b"y" * 40, b"<", b">")
def test_unescape_is_the_inverse_of_escape_for_ascii(text, before, after):
    # The Redis reader rebuilds ASCII output from its frame with it (app/store/redis/codec.py).
    body = _jsonescape.escape(text)
    frame = before + body + after
    assert _jsonescape.unescape(frame, len(before), len(before) + len(body)) == text
    assert json.loads(b'"' + body + b'"').encode("ascii") == text


@pytest.mark.parametrize("body", [b"\\/", b"\\u0080", b"\\u00e9", b"\\", b'a"b', b"\x01", b"\xc3\xa9", b"\\u00",
                                  b"\\x41", b"\\U0041", b"\\u0g41", b"A" * 20 + b"\xc3\xa9" + b"A" * 20,
                                  b"A" * 20 + b'"' + b"A" * 20, b"\\ud83d\\ude00"])
def test_unescape_leaves_what_escape_never_writes_for_ascii_to_the_json_module(body):
    assert _jsonescape.unescape(body, 0, len(body)) is None


def test_unescape_checks_its_arguments():
    with pytest.raises(ValueError):
        _jsonescape.unescape(b"abc", 2, 5)
    with pytest.raises(TypeError):
        _jsonescape.unescape("abc", 0, 3)
