"""The Server-Sent Events wire format: one small encoder with no I/O.

Rules that matter (WHATWG HTML, "Server-sent events"):
- CR, LF and CRLF all end a line, so no field value may contain either;
  data is split into one ``data:`` line per line.
- An ``id`` containing NUL is ignored by browsers, so it is refused here.
- ``retry`` must be ASCII digits only.
- Event types ``error`` and ``open`` would fire a page's built-in handlers.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from . import _jsonescape

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_RESERVED_EVENT_TYPES = frozenset({"error", "open"})

HEARTBEAT = b": ping\n\n"


def _check_field(name: str, value: str) -> None:
    if _LINE_BREAK.search(value):
        raise ValueError(f"SSE {name} must not contain CR or LF")
    if "\0" in value:
        raise ValueError(f"SSE {name} must not contain NUL")


def _check_event_type(event: str) -> None:
    _check_field("event", event)
    if not event or event in _RESERVED_EVENT_TYPES:
        raise ValueError(f"SSE event type {event!r} is reserved or empty")


def encode_event(data: str, *, event: str | None = None, event_id: int | str | None = None) -> bytes:
    """Encode one event. SSE cannot carry CR: each CR, CRLF or LF in ``data`` arrives as LF.

    Use encode_json_event for text that must arrive exactly (command output).
    """
    parts = []
    if event_id is not None:
        event_id = str(event_id)
        _check_field("id", event_id)
        parts.append(f"id: {event_id}\n")
    if event is not None:
        _check_event_type(event)
        parts.append(f"event: {event}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def json_string_body(text: bytes) -> bytes:
    """The inside of a JSON string for valid UTF-8 ``text``: byte for byte what json.dumps(ensure_ascii=False) writes.

    In C (app/streaming/_jsonescape.c): command output is the hot path, and the json
    module escapes one character at a time (RESULTS.md has the numbers).
    """
    return _jsonescape.escape(text)


class OutputJSON(NamedTuple):
    """``{"type": kind, "out": <text>}`` for command output: escaped once, straight into its frame (in C)."""

    kind: str
    text: bytes  # valid UTF-8

    def encode(self) -> bytes:
        """The JSON text."""
        return _jsonescape.escape_between(_json_head(self.kind), self.text, b'"}')


def output_json(kind: str, text: bytes) -> OutputJSON:
    """``{"type": kind, "out": text}`` for valid UTF-8 output ``text``, exactly as json.dumps would write it."""
    return OutputJSON(kind, text)


def _json_head(kind: str) -> bytes:
    return b'{"type":%s,"out":"' % dumps(kind).encode("utf-8")


# (event type, output kind) -> the frame's bytes from after the id to the output's opening quote, and the
# length of its JSON part. Only a handful of pairs exist (stdout, stderr), so building each once keeps the
# hot path to one dict lookup and one C call.
_output_heads: dict[tuple[str, str], tuple[bytes, int]] = {}


def _output_head(event: str, kind: str) -> tuple[bytes, int]:
    _check_event_type(event)
    json_head = _json_head(kind)
    head = (b"\nevent: %s\ndata: %s" % (event.encode("utf-8"), json_head), len(json_head))
    if len(_output_heads) < 64:
        _output_heads[(event, kind)] = head
    return head


def dumps(payload: Any) -> str:
    """Compact JSON whose text never contains CR or LF."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def encode_json_event(payload: Any, *, event: str, event_id: int | str | None = None) -> bytes:
    """Encode ``payload`` as JSON on a single ``data:`` line (command output in one C call)."""
    return encode_json_frame(payload, event, event_id)[0]


def encode_json_frame(payload: Any, event: str, event_id: int | str | None = None) -> tuple[bytes, int]:
    """``encode_json_event``, and where the JSON begins in the frame (it ends before the final two LFs)."""
    if payload.__class__ is OutputJSON and event_id.__class__ is int:
        # The hot path: every line of output a command writes passes here.
        head, json_length = _output_heads.get((event, payload.kind)) or _output_head(event, payload.kind)
        prefix = b"id: %d%s" % (event_id, head)
        return _jsonescape.escape_between(prefix, payload.text, b'"}\n\n'), len(prefix) - json_length
    data = payload.encode() if isinstance(payload, OutputJSON) else dumps(payload).encode("utf-8")
    head = []
    if event_id is not None:
        event_id = str(event_id)
        _check_field("id", event_id)
        head.append(b"id: %s\n" % event_id.encode("utf-8"))
    _check_event_type(event)
    head.append(b"event: %s\ndata: " % event.encode("utf-8"))
    # JSON text never holds a raw CR or LF (json escapes them), so it is one data: line.
    prefix = b"".join(head)
    return b"".join((prefix, data, b"\n\n")), len(prefix)


def encode_comment(text: str = "") -> bytes:
    """A comment block: ignored by clients, but real bytes that keep proxies open."""
    lines = _LINE_BREAK.split(text) if text else [""]
    return "".join(f": {line}\n" if line else ":\n" for line in lines).encode("utf-8") + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """Set the client's reconnection delay."""
    if milliseconds < 0:
        raise ValueError("retry must not be negative")
    return f"retry: {int(milliseconds)}\n\n".encode("ascii")
