"""Unit tests for app/policy/messages.py: channel names, event names and published messages."""

from __future__ import annotations

import json
import math
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.policy.messages import (
    MAX_DEPTH,
    RESERVED_EVENTS,
    SYSTEM_CHANNELS,
    InvalidMessage,
    Message,
    check_channel_name,
    parse_message,
)

BIG = 10**9
EXAMPLES = 60
NAME_REST = string.ascii_letters + string.digits + "_.-"

channel_names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_letters + string.digits),
    st.text(alphabet=NAME_REST, max_size=63),
)
event_names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_letters),
    st.text(alphabet=NAME_REST, max_size=63),
).filter(lambda name: name not in RESERVED_EVENTS)
# Any JSON value (no NaN or infinities: they are not JSON).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def _json(document) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def _same(a, b) -> bool:
    """Equal, with floats compared by value and -0.0 told apart from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


# Channel names.


@settings(deadline=None, max_examples=EXAMPLES)
@given(channel_names)
def test_valid_channel_names_are_accepted(name):
    assert check_channel_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a" * 65, ".x", "-x", "_x", "a b", "a/b", "a\n", "a\x00", "é", "\uff41", "a😀", "chan:x", "a,b", "a=b", " a",
     "a\t"],
)
def test_invalid_channel_names_are_refused(name):
    with pytest.raises(InvalidMessage):
        check_channel_name(name)


@settings(deadline=None, max_examples=EXAMPLES)
@given(st.text(min_size=1, max_size=70))
def test_channel_name_rule_matches_its_description(name):
    valid = (
        len(name) <= 64
        and name[0] in string.ascii_letters + string.digits
        and all(ch in NAME_REST for ch in name)
    )
    if valid:
        assert check_channel_name(name) == name
    else:
        with pytest.raises(InvalidMessage):
            check_channel_name(name)


def test_system_channels():
    assert frozenset({"jobs", "stats"}) == SYSTEM_CHANNELS
    for name in SYSTEM_CHANNELS:
        assert check_channel_name(name) == name


# Parsing: round trips.


@settings(deadline=None, max_examples=3 * EXAMPLES)
@given(json_values, event_names)
def test_json_round_trip(value, event):
    message = parse_message(_json({"data": value, "event": event}), True, BIG)
    assert message.event == event
    assert _same(message.data, value)


@settings(deadline=None, max_examples=EXAMPLES)
@given(json_values)
def test_json_without_event_is_a_message(value):
    message = parse_message(_json({"data": value}), True, BIG)
    assert message.event == "message" and _same(message.data, value)


@settings(deadline=None, max_examples=EXAMPLES)
@given(st.text(min_size=1).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)))
def test_plain_text_round_trip(text):
    assert parse_message(text.encode("utf-8"), False, BIG) == Message("message", text)


def test_plain_text_is_never_parsed_as_json():
    assert parse_message(b'{"data": 1, "event": "x"}', False, BIG) == Message("message", '{"data": 1, "event": "x"}')


@pytest.mark.parametrize("value", [None, True, False, 0, -5, 2**64, 0.5, -1e-300, "", "s", [], {}, [None], {"a": {}}])
def test_every_json_type(value):
    assert parse_message(_json({"data": value}), True, BIG) == Message("message", value)


def test_field_order_and_whitespace_do_not_matter():
    body = b' \n{ "event" : "x.y-z_1" ,\n\t"data" : [ 1 , 2 ] } \n'
    assert parse_message(body, True, BIG) == Message("x.y-z_1", [1, 2])


def test_a_valid_surrogate_pair_is_one_character():
    assert parse_message(b'{"data": "\\ud83d\\ude00"}', True, BIG).data == "\U0001f600"


# Parsing: refusals.


def test_size_limit_is_in_bytes_and_inclusive():
    assert parse_message(b"x" * 10, False, 10).data == "x" * 10
    with pytest.raises(InvalidMessage, match="larger than 10 bytes"):
        parse_message(b"x" * 11, False, 10)
    with pytest.raises(InvalidMessage, match="larger than"):
        parse_message("é".encode() * 6, False, 11)  # 6 characters, 12 bytes
    body = _json({"data": "abc"})
    assert parse_message(body, True, len(body)).data == "abc"
    with pytest.raises(InvalidMessage, match="larger than"):
        parse_message(body, True, len(body) - 1)


@pytest.mark.parametrize(
    ("body", "is_json", "fragment"),
    [
        (b"", False, "empty"),
        (b"", True, "not valid JSON"),
        (b"\xff", False, "UTF-8"),
        (b"\xed\xa0\x80", False, "UTF-8"),  # an encoded surrogate is not UTF-8
        (b'{"data": "\xff"}', True, "UTF-8"),
        (b"{", True, "not valid JSON"),
        (b'{"data": 1} 2', True, "not valid JSON"),
        (b"[1]", True, "JSON object"),
        (b'"x"', True, "JSON object"),
        (b"1", True, "JSON object"),
        (b"null", True, "JSON object"),
        (b'{"data": 1, "x": 2}', True, "unknown field(s): x"),
        (b'{"data": 1, "b": 2, "a": 3}', True, "unknown field(s): a, b"),
        (b'{"event": "e"}', True, "missing field 'data'"),
        (b"{}", True, "missing field 'data'"),
        (b'{"data": NaN}', True, "not valid JSON"),
        (b'{"data": Infinity}', True, "not valid JSON"),
        (b'{"data": -Infinity}', True, "not valid JSON"),
        (b'{"data": "\\ud800"}', True, "surrogate"),
        (b'{"data": "\\udfff"}', True, "surrogate"),
        (b'{"data": {"\\ud800": 1}}', True, "surrogate"),
        (b'{"data": [[["\\udc00"]]]}', True, "surrogate"),
        (b'{"data": ' + b"[" * 100000 + b"]" * 100000 + b"}", True, "nested too deeply"),
    ],
)
def test_refused_bodies(body, is_json, fragment):
    with pytest.raises(InvalidMessage) as info:
        parse_message(body, is_json, BIG)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "event",
    ["error", "open", "gap", "reset", "busy", "", " x", "x ", "a b", "a\nb", "a\rb", "1x", "-x", ".x", "_x", "é",
     "E" * 65, "a:b", "a\x00", 1, 1.5, None, True, [], {}],
)
def test_refused_event_names(event):
    with pytest.raises(InvalidMessage, match="event must be"):
        parse_message(_json({"data": 1, "event": event}), True, BIG)


@settings(deadline=None, max_examples=EXAMPLES)
@given(st.text(max_size=70))
def test_event_name_rule(event):
    valid = (
        0 < len(event) <= 64
        and event[0] in string.ascii_letters
        and all(ch in NAME_REST for ch in event)
        and event not in RESERVED_EVENTS
    )
    body = json.dumps({"data": 0, "event": event}).encode()
    if valid:
        assert parse_message(body, True, BIG).event == event
    else:
        with pytest.raises(InvalidMessage):
            parse_message(body, True, BIG)


def test_invalid_message_is_a_value_error():
    assert issubclass(InvalidMessage, ValueError)


def test_nesting_is_capped_at_max_depth():
    def nested(depth: int, opening: bytes = b"[", closing: bytes = b"]") -> bytes:
        return b'{"data": ' + opening * depth + closing * depth + b"}"

    assert parse_message(nested(MAX_DEPTH), True, BIG).data is not None
    deepest_objects = b'{"data": ' + b'{"a": ' * (MAX_DEPTH - 1) + b"{}" + b"}" * (MAX_DEPTH - 1) + b"}"
    assert parse_message(deepest_objects, True, BIG).data is not None
    for body in (nested(MAX_DEPTH + 1), nested(MAX_DEPTH * 10),
                 b'{"data": ' + b'{"a": [' * MAX_DEPTH + b"1" + b"]}" * MAX_DEPTH + b"}"):
        with pytest.raises(InvalidMessage, match=f"nested too deeply: at most {MAX_DEPTH} levels"):
            parse_message(body, True, BIG)
    # Scalars and text add no depth; plain text bodies are never parsed.
    assert parse_message(b"[" * 1000, False, BIG).data == "[" * 1000
