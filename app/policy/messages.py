"""Channel names, event names and published messages: pure validation."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .access import SYSTEM_CHANNELS

__all__ = [
    "MAX_DEPTH", "RESERVED_EVENTS", "SYSTEM_CHANNELS", "InvalidMessage", "Message", "check_channel_name",
    "parse_message",
]

CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", re.ASCII)
# error and open would fire a page's built-in EventSource handlers; gap, reset and busy are the server's own
# events on a channel stream, with shapes of their own (README, "The event stream"): a publisher's must not
# pass for them.
RESERVED_EVENTS = frozenset({"error", "open", "gap", "reset", "busy"})
# Arrays and objects nested in a message's data. Far below what the encoder
# (sse.dumps inside EventLog.append, a few frames deeper) could ever choke on.
MAX_DEPTH = 32


class InvalidMessage(ValueError):
    """A channel name or message was refused; the message says why."""


def check_channel_name(name: str) -> str:
    """A valid channel name, or InvalidMessage."""
    if not CHANNEL_NAME.fullmatch(name):
        raise InvalidMessage("channel names are 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


@dataclass(frozen=True)
class Message:
    """What a publisher sent: an event name and any JSON value."""

    event: str
    data: Any


def parse_message(body: bytes, is_json: bool, max_bytes: int) -> Message:
    """A JSON body {"data": ..., "event": "name"} or a plain UTF-8 text body."""
    if len(body) > max_bytes:
        raise InvalidMessage(f"message is larger than {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("message is not valid UTF-8") from None
    if not is_json:
        if not text:
            raise InvalidMessage("message is empty")
        return Message("message", text)
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise InvalidMessage(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidMessage("body is nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidMessage('body must be a JSON object: {"data": ..., "event": "name"}')
    unknown = set(document) - {"data", "event"}
    if unknown:
        raise InvalidMessage(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "data" not in document:
        raise InvalidMessage("missing field 'data'")
    event = document.get("event", "message")
    if not isinstance(event, str) or not EVENT_NAME.fullmatch(event) or event in RESERVED_EVENTS:
        raise InvalidMessage(
            "event must be a name of letters, digits, '_', '.' or '-', and not " + ", ".join(sorted(RESERVED_EVENTS))
        )
    _check_depth(document["data"])
    _check_no_lone_surrogates(document["data"])
    return Message(event, document["data"])


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_depth(value: Any) -> None:
    # Iterative, so any depth the parser accepted is measured without recursion.
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > MAX_DEPTH:
            raise InvalidMessage(f"data is nested too deeply: at most {MAX_DEPTH} levels of arrays and objects")
        stack.extend((child, depth) for child in children)


def _check_no_lone_surrogates(value: Any) -> None:
    # Lone surrogates cannot be sent as UTF-8; refuse them here rather than fail every subscriber later.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessage("message contains lone surrogate code points") from None
