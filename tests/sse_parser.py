"""A WHATWG-conformant event-stream parser for tests (HTML Standard, "Parsing an event stream").

Independent of the server's encoder: it decodes UTF-8 with replacement,
strips one leading BOM, treats CR, LF and CRLF as line ends (a CR split
from its LF across chunks included), and dispatches like a browser.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass
class MessageEvent:
    """What a browser's EventSource would dispatch."""

    type: str
    data: str
    last_event_id: str


class EventStreamParser:
    """Feed bytes in any chunking; collect dispatched events, retry and comments."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._bom_checked = False
        self._pending_cr = False
        self._data: list[str] = []
        self._event_type = ""
        self._last_event_id_buffer = ""
        self.last_event_id = ""
        self.retry: int | None = None
        self.events: list[MessageEvent] = []
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[MessageEvent]:
        """Parse a chunk; returns the events it completed."""
        text = self._decoder.decode(chunk)
        if not self._bom_checked and text:
            if text.startswith("\ufeff"):
                text = text[1:]
            self._bom_checked = True
        before = len(self.events)
        self._consume(text)
        return self.events[before:]

    def _consume(self, text: str) -> None:
        buffer = self._buffer + text
        start = 0
        i = 0
        n = len(buffer)
        while i < n:
            ch = buffer[i]
            if self._pending_cr:
                self._pending_cr = False
                if ch == "\n" and i == start:
                    start = i = i + 1
                    continue
            if ch == "\r":
                self._line(buffer[start:i])
                self._pending_cr = True
                start = i = i + 1
                continue
            if ch == "\n":
                self._line(buffer[start:i])
                start = i = i + 1
                continue
            i += 1
        self._buffer = buffer[start:]

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        if ":" in line:
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._last_event_id_buffer = value
        elif name == "retry" and value and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _dispatch(self) -> None:
        self.last_event_id = self._last_event_id_buffer
        if not self._data:
            self._event_type = ""
            return
        data = "\n".join(self._data)
        self.events.append(MessageEvent(self._event_type or "message", data, self.last_event_id))
        self._data = []
        self._event_type = ""
