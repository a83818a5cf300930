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
from typing import Any

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_RESERVED_EVENT_TYPES = frozenset({"error", "open"})

HEARTBEAT = b": ping\n\n"

# What json.dumps(ensure_ascii=False) writes for each byte that needs escaping in a JSON string.
_JSON_ESCAPES = {byte: f"\\u{byte:04x}".encode("ascii") for byte in range(0x20)} | {
    0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r", 0x22: b'\\"',
}
_BACKSLASH = 0x5C
_NOT_ESCAPED = bytes(byte for byte in range(256) if byte not in _JSON_ESCAPES and byte != _BACKSLASH)
_SINGLE_BYTES = [bytes([byte]) for byte in range(256)]


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

    Command output is mostly plain text with a few kinds of special bytes, so
    finding which kinds occur (one C pass) and replacing each kind (memchr
    speed) is several times faster than the json module's per-character loop.
    """
    special = text.translate(None, _NOT_ESCAPED)
    if not special:
        return text
    kinds = set(special)
    if _BACKSLASH in kinds:
        # First, so that the backslashes the other escapes add are not doubled.
        kinds.discard(_BACKSLASH)
        text = text.replace(b"\\", b"\\\\")
    for byte in kinds:
        text = text.replace(_SINGLE_BYTES[byte], _JSON_ESCAPES[byte])
    return text


def output_json(kind: str, text: bytes) -> bytes:
    """``{"type": kind, "out": text}`` for valid UTF-8 output ``text``, as json.dumps would write it, encoded."""
    return b"".join((b'{"type":"', kind.encode("ascii"), b'","out":"', json_string_body(text), b'"}'))


def dumps(payload: Any) -> str:
    """Compact JSON whose text never contains CR or LF."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def encode_json_event(payload: Any, *, event: str, event_id: int | str | None = None) -> bytes:
    """Encode ``payload`` as JSON on a single ``data:`` line; ``bytes`` are JSON already encoded (output_json)."""
    data = payload if isinstance(payload, bytes) else dumps(payload).encode("utf-8")
    head = []
    if event_id is not None:
        event_id = str(event_id)
        _check_field("id", event_id)
        head.append(b"id: %s\n" % event_id.encode("utf-8"))
    _check_event_type(event)
    head.append(b"event: %s\ndata: " % event.encode("utf-8"))
    # JSON text never holds a raw CR or LF (json escapes them), so it is one data: line.
    return b"".join((*head, data, b"\n\n"))


def encode_comment(text: str = "") -> bytes:
    """A comment block: ignored by clients, but real bytes that keep proxies open."""
    lines = _LINE_BREAK.split(text) if text else [""]
    return "".join(f": {line}\n" if line else ":\n" for line in lines).encode("utf-8") + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """Set the client's reconnection delay."""
    if milliseconds < 0:
        raise ValueError("retry must not be negative")
    return f"retry: {int(milliseconds)}\n\n".encode("ascii")
