"""One SSE connection for many sources: composite cursors and re-tagged frames. Pure code.

A multiplexed stream's event id carries every source's cursor, e.g.
``job:3f2a9c=120,channel:chat=7``, so one ``Last-Event-ID`` resumes them all.
"""

from __future__ import annotations

import re

from ..store.eventlog import LogEvent

_SOURCE = re.compile(r"(job|channel):([A-Za-z0-9_.-]{1,64})", re.ASCII)


class InvalidCursor(ValueError):
    """A composite Last-Event-ID that cannot be read."""


def source_key(kind: str, name: str) -> str:
    """``job:<id>`` or ``channel:<name>``."""
    return f"{kind}:{name}"


def parse_composite(text: str | None, max_sources: int) -> dict[str, int]:
    """Cursors by source key from a composite id; empty for none."""
    if not text:
        return {}
    cursors: dict[str, int] = {}
    parts = text.split(",")
    if len(parts) > max_sources:
        raise InvalidCursor("Last-Event-ID names more sources than the request")
    for part in parts:
        key, sep, value = part.rpartition("=")
        if not sep or not _SOURCE.fullmatch(key) or not value.isascii() or not value.isdigit() or len(value) > 19:
            raise InvalidCursor("Last-Event-ID must look like job:<id>=<n>,channel:<name>=<n>")
        cursors[key] = int(value)
    return cursors


def format_composite(cursors: dict[str, int]) -> str:
    """The composite id for the current cursors (sources in a stable order)."""
    return ",".join(f"{key}={value}" for key, value in cursors.items())


def _data_of(frame: bytes) -> bytes:
    # Frames from the event log are "id: N\nevent: K\ndata: <one JSON line>\n\n".
    start = frame.index(b"\ndata: ") + 7
    return frame[start:-2]


def retag(event: LogEvent, source: str, composite_id: str) -> bytes:
    """The event as a multiplexed frame: same type, data wrapped with its source and own id."""
    return b"".join(
        (
            b"id: ", composite_id.encode("ascii"),
            b"\nevent: ", event.kind.encode("ascii"),
            b'\ndata: {"source":"', source.encode("ascii"),
            b'","id":', str(event.id).encode("ascii"),
            b',"data":', _data_of(event.frame), b"}\n\n",
        )
    )


def missed_field(source: str) -> str:
    """What a gap counts for a source: output bytes of a job, messages of a channel."""
    return "missed_bytes" if source.startswith("job:") else "missed_messages"


def retag_gap(source: str, missed: int, composite_id: str) -> bytes:
    """A multiplexed ``gap`` event for one source."""
    field = missed_field(source)
    return f'id: {composite_id}\nevent: gap\ndata: {{"source":"{source}","{field}":{missed}}}\n\n'.encode("ascii")
