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


def _check_field(name: str, value: str) -> None:
    if _LINE_BREAK.search(value):
        raise ValueError(f"SSE {name} must not contain CR or LF")
    if "\0" in value:
        raise ValueError(f"SSE {name} must not contain NUL")


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
        _check_field("event", event)
        if not event or event in _RESERVED_EVENT_TYPES:
            raise ValueError(f"SSE event type {event!r} is reserved or empty")
        parts.append(f"event: {event}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def dumps(payload: Any) -> str:
    """Compact JSON whose text never contains CR or LF."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def encode_json_event(payload: Any, *, event: str, event_id: int | str | None = None) -> bytes:
    """Encode ``payload`` as JSON on a single ``data:`` line."""
    return encode_event(dumps(payload), event=event, event_id=event_id)


def encode_comment(text: str = "") -> bytes:
    """A comment block: ignored by clients, but real bytes that keep proxies open."""
    lines = _LINE_BREAK.split(text) if text else [""]
    return "".join(f": {line}\n" if line else ":\n" for line in lines).encode("utf-8") + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """Set the client's reconnection delay."""
    if milliseconds < 0:
        raise ValueError("retry must not be negative")
    return f"retry: {int(milliseconds)}\n\n".encode("ascii")
