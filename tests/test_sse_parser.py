"""The test-side event-stream parser (tests/sse_parser.py) checked against the WHATWG rules and WPT cases.

Integration tests trust this parser to say what a browser's EventSource would
see, so it is held to the web-platform-tests ``eventsource/format-*`` cases
(the bytes WPT's ``message.py`` serves: ``message`` + ``"\\n\\n"`` unless
``newline=none``, then always one more ``"\\n"``), and to an independent
whole-stream reference implementation for every chunking.
"""

from __future__ import annotations

import codecs
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from .sse_parser import EventStreamParser, MessageEvent

LONG = "x" * 2048


def wpt_body(message: str | bytes, newline: bool = True) -> bytes:
    """What WPT's eventsource/resources/message.py answers for ``message``."""
    raw = message.encode("utf-8") if isinstance(message, str) else message
    return raw + (b"\n\n" if newline else b"") + b"\n"


def parse(data: bytes, chunks: list[int] | None = None) -> EventStreamParser:
    """Feed ``data`` whole, or split at the given offsets; return the parser."""
    parser = EventStreamParser()
    if chunks is None:
        parser.feed(data)
        return parser
    previous = 0
    for cut in [*sorted(chunks), len(data)]:
        parser.feed(data[previous:cut])
        previous = cut
    return parser


def datas(parser: EventStreamParser) -> list[str]:
    return [event.data for event in parser.events]


# WPT format-* cases: (name, bytes on the wire, expected data of the dispatched events).
WPT_CASES = [
    ("format-newlines", wpt_body("data:test\r\ndata\ndata:test\r\n\r", newline=False), ["test\n\ntest"]),
    ("format-leading-space", wpt_body("data:\ttest\rdata: \ndata:test"), ["\ttest\n\ntest"]),
    ("format-field-data", wpt_body("data:\n\ndata\ndata\n\ndata:test"), ["", "\n", "test"]),
    (
        "format-field-unknown",
        wpt_body("data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test"),
        ["test\n\ntest"],
    ),
    (
        "format-field-parsing",
        wpt_body(
            "data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n"
            " data:32\ndata:4\n",
            newline=False,
        ),
        ["\0\n 2\n1\n3\n\n4"],
    ),
    (
        "format-comments",
        wpt_body(f"data:1\r:\0\n:\r\ndata:2\n:{LONG}\rdata:3\n:data:fail\r:{LONG}\ndata:4\n", newline=False),
        ["1\n2\n3\n4"],
    ),
    ("format-null-character", wpt_body("data:\0\n\n"), ["\0"]),
    ("format-bom", wpt_body("\ufeffdata:1\n\n\ufeffdata:2\n\ndata:3"), ["1", "3"]),
    ("format-bom-2", wpt_body("\ufeff\ufeffdata:1\n\ndata:2\n\ndata:3"), ["2", "3"]),
    ("format-bom-utf-16", wpt_body(b"\xff\xfedata:1\n\ndata:2\n\ndata:3"), ["2", "3"]),
    ("format-utf-8", wpt_body(b"data:ok\xe2\x80\xa6"), ["ok\u2026"]),
    ("format-field-retry-empty", wpt_body("retry\ndata:test"), ["test"]),
    (
        "format-data-before-final-empty-line",
        wpt_body("retry:1000\ndata:test1\n\nid:test\ndata:test2", newline=False),
        ["test1"],
    ),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in WPT_CASES], ids=[c[0] for c in WPT_CASES])
def test_wpt_format_cases(body, expected):
    assert datas(parse(body)) == expected


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in WPT_CASES], ids=[c[0] for c in WPT_CASES])
def test_wpt_format_cases_at_every_two_chunk_split(body, expected):
    # Includes a split between every \r and its \n, and inside every multi-byte character;
    # only cuts inside the long runs of "x" in format-comments are skipped (they add time, not cases).
    for cut in (c for c in range(len(body) + 1) if body[c - 1 : c + 1] != b"xx"):
        assert datas(parse(body, [cut])) == expected, f"split at {cut}: {body[:cut]!r} | {body[cut:]!r}"


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in WPT_CASES], ids=[c[0] for c in WPT_CASES])
def test_wpt_format_cases_one_byte_at_a_time(body, expected):
    assert datas(parse(body, list(range(len(body))))) == expected


def test_newlines_case_dispatches_on_the_trailing_lone_cr_without_waiting_for_more():
    parser = EventStreamParser()
    assert parser.feed(b"data:test\r\ndata\ndata:test\r\n") == []
    assert [e.data for e in parser.feed(b"\r")] == ["test\n\ntest"]
    # The LF that then follows the lone CR belongs to it: no second blank line, nothing else.
    assert parser.feed(b"\n") == []
    assert parser.feed(b"data:x\n\n")[0].data == "x"


def test_cr_then_lf_in_separate_chunks_is_one_line_end_not_two():
    parser = EventStreamParser()
    parser.feed(b"data:a\r")
    parser.feed(b"\ndata:b\r")
    parser.feed(b"\n\r")
    parser.feed(b"\n")
    assert datas(parser) == ["a\nb"]


def test_cr_cr_is_two_line_ends():
    assert datas(parse(b"data:a\r\rdata:b\r\r")) == ["a", "b"]


def test_leading_space_only_one_is_removed_and_tab_is_kept():
    assert datas(parse(b"data:  two\n\ndata:\ttab\n\ndata: one\n\ndata:none\n\n")) == [" two", "\ttab", "one", "none"]


def test_bare_field_name_without_colon():
    parser = parse(b"data\n\nevent\ndata:x\n\nid\ndata:y\n\n")
    assert parser.events == [
        MessageEvent("message", "", ""),
        MessageEvent("message", "x", ""),
        MessageEvent("message", "y", ""),
    ]


def test_field_names_are_case_sensitive_and_exact():
    assert parse(b"Data:1\nDATA:2\ndata :3\n data:4\n\n").events == []


def test_event_type_custom_empty_and_reset_after_dispatch():
    parser = parse(wpt_body("event:test\ndata:x\n\ndata:x") + wpt_body("event: \ndata:data"))
    assert [(e.type, e.data) for e in parser.events] == [("test", "x"), ("message", "x"), ("message", "data")]


def test_event_type_without_data_never_fires_and_does_not_leak_into_next_event():
    parser = parse(b"event:ghost\n\ndata:real\n\n")
    assert [(e.type, e.data) for e in parser.events] == [("message", "real")]


def test_id_sets_last_event_id_and_persists_until_changed():
    parser = parse(b"id: 1\ndata:a\n\ndata:b\n\nid: 2\ndata:c\n\nid:\ndata:d\n\n")
    assert [(e.data, e.last_event_id) for e in parser.events] == [("a", "1"), ("b", "1"), ("c", "2"), ("d", "")]


def test_id_only_block_updates_last_event_id_without_dispatching():
    parser = parse(b"id: 7\n\n")
    assert parser.events == []
    assert parser.last_event_id == "7"
    assert parser.feed(b"data:x\n\n") == [MessageEvent("message", "x", "7")]


def test_wpt_last_event_id_default_value():
    # eventsource/resources/last-event-id.py without a Last-Event-ID header.
    parser = parse("id: \u2026\nretry: 200\ndata: hello\n\n".encode())
    assert parser.events == [MessageEvent("message", "hello", "\u2026")]
    assert parser.retry == 200


@pytest.mark.parametrize("idvalue", ["\0\0", "x\0", "\0x", "x\0x", " \0"])
def test_wpt_id_with_nul_is_ignored(idvalue):
    # format-field-id-null.window.js: the whole id field is ignored; lastEventId stays "".
    parser = parse(f"id: {idvalue}\nretry: 200\ndata: hello\n\n".encode())
    assert parser.events == [MessageEvent("message", "hello", "")]


def test_id_with_nul_keeps_the_previous_id():
    parser = parse(b"id: 5\ndata:a\n\nid: 6\x00\ndata:b\n\n")
    assert [e.last_event_id for e in parser.events] == ["5", "5"]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"retry:3000\nretry:1000x\ndata:x\n\n", 3000),  # WPT format-field-retry-bogus
        (b"retry: 5000\n\n", 5000),
        (b"retry:0\n\n", 0),
        (b"retry: 5s\n\n", None),
        (b"retry: -1\n\n", None),
        (b"retry:  5000\n\n", None),  # the second space is not a digit
        (b"retry: +5\n\n", None),
        (b"retry: 1.5\n\n", None),
        (b"retry\n\n", None),
        (b"retry:\n\n", None),
        ("retry: \uff15\n\n".encode(), None),  # FULLWIDTH DIGIT FIVE is a digit, but not ASCII
        ("retry: \u0665\n\n".encode(), None),  # ARABIC-INDIC DIGIT FIVE
    ],
)
def test_retry_only_ascii_digits(stream, expected):
    assert parse(stream).retry == expected


def test_bom_split_across_chunks_is_stripped_once():
    parser = parse(b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\n", [1, 2, 4])
    assert datas(parser) == ["2"]
    parser = parse(b"\xef\xbb\xbfdata:1\n\n", [1, 2])
    assert datas(parser) == ["1"]


def test_bom_after_the_first_character_is_not_stripped():
    # Only a leading BOM is special; a later one is part of the field name.
    assert datas(parse(b"\n\xef\xbb\xbfdata:1\n\ndata:2\n\n")) == ["2"]


def test_comments_interleaved_are_recorded_and_never_dispatch():
    parser = parse(b": hello\n:\ndata:1\n: in the middle\ndata:2\n\n: ping\n\n")
    assert datas(parser) == ["1\n2"]
    assert parser.comments == [" hello", "", " in the middle", " ping"]


def test_comment_block_alone_never_dispatches():
    parser = parse(b": ping\n\n:\n\n")
    assert parser.events == []
    assert parser.comments == [" ping", ""]


def test_pending_event_and_partial_line_are_not_dispatched_at_end_of_stream():
    parser = parse(b"data:complete\n\ndata:pending\ndata:partial")
    assert datas(parser) == ["complete"]


def test_invalid_utf8_becomes_replacement_characters():
    assert datas(parse(b"data:a\xffb\xc3\n\n")) == ["a\ufffdb\ufffd"]


def test_multibyte_character_split_across_chunks_is_decoded_whole():
    body = "data:\u20ac\U0001f600\n\n".encode()
    for cut in range(len(body) + 1):
        assert datas(parse(body, [cut])) == ["\u20ac\U0001f600"]


def test_feed_returns_only_the_events_completed_by_that_chunk():
    parser = EventStreamParser()
    assert parser.feed(b"data:1\n\ndata:2") == [MessageEvent("message", "1", "")]
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\ndata:3\n\n") == [MessageEvent("message", "2", ""), MessageEvent("message", "3", "")]
    assert datas(parser) == ["1", "2", "3"]


# An independent whole-stream reference: decode everything at once, split all lines
# with one regex, drop the unterminated tail, interpret. The incremental parser must
# agree with it for any bytes in any chunking.

_LINE_END = re.compile(r"\r\n|\r|\n")


def reference_parse(data: bytes) -> tuple[list[MessageEvent], int | None, list[str]]:
    text = data.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _LINE_END.split(text)[:-1]  # the last piece never saw its line end
    events: list[MessageEvent] = []
    comments: list[str] = []
    data_lines: list[str] = []
    event_type = ""
    id_buffer = ""
    retry = None
    for line in lines:
        if not line:
            if data_lines:
                events.append(MessageEvent(event_type or "message", "\n".join(data_lines), id_buffer))
            data_lines, event_type = [], ""
            continue
        if line[0] == ":":
            comments.append(line[1:])
            continue
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            id_buffer = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            retry = int(value)
    return events, retry, comments


_PIECES = st.sampled_from(
    [
        "data:", "data: ", "data", "event:", "event: ", "id:", "id: ", "retry:", "retry: ", ":", ": ",
        "\r", "\n", "\r\n", "\n\n", "\r\r", "\r\n\r\n", "\0", " ", "\t", "x", "42", "message", "\ufeff",
        "\u20ac", "\U0001f600", "\u2028", "\x85",
    ]
)
_STREAMS = st.one_of(
    st.lists(_PIECES, max_size=40).map(lambda parts: "".join(parts).encode("utf-8")),
    st.lists(st.one_of(_PIECES.map(lambda p: p.encode()), st.binary(max_size=4)), max_size=30).map(b"".join),
)


def _cuts(data: bytes):
    return st.lists(st.integers(min_value=0, max_value=len(data)), max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), stream=_STREAMS)
@example(data=None, stream=b"data:a\r\ndata:b\r\n\r\n")
@example(data=None, stream="\ufeffdata:\u20ac\r\r".encode())
def test_parser_agrees_with_whole_stream_reference_in_any_chunking(data, stream):
    cuts = [] if data is None else data.draw(_cuts(stream), label="cuts")
    parser = parse(stream, cuts)
    events, retry, comments = reference_parse(stream)
    assert parser.events == events
    assert parser.retry == retry
    assert parser.comments == comments


@settings(max_examples=80, deadline=None)
@given(stream=_STREAMS)
def test_every_chunking_matches_feeding_whole(stream):
    whole = parse(stream)
    for cut in range(len(stream) + 1):
        split = parse(stream, [cut])
        assert (split.events, split.retry, split.comments) == (whole.events, whole.retry, whole.comments)


def test_reference_decoder_matches_incremental_decoder_for_split_invalid_bytes():
    # Guard for the reference itself: one-shot and incremental UTF-8 replacement agree.
    data = b"a\xe2\x82\xff\xf0\x9f\x98b"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    incremental = "".join(decoder.decode(data[i : i + 1]) for i in range(len(data))) + decoder.decode(b"", final=True)
    assert incremental == data.decode("utf-8", errors="replace")
