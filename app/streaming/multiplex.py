"""One SSE connection for many sources: composite cursors and re-tagged frames. Pure code.

A multiplexed stream's event id carries every source's position, e.g.
``job:3f2a9c=120,channel:chat=k3x9ab-7`` (a job's id, a channel's
``<epoch>-<n>``), so one ``Last-Event-ID`` resumes them all.

A re-tagged frame keeps its event type and wraps its data:
``{"source": "channel:chat", "id": "k3x9ab-7", "data": <the original data>}``,
built from the event's stored JSON (``LogEvent.data``) without parsing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..store.base import LogEvent, Position, is_job_key, parse_position

_SOURCE = re.compile(r"(job|channel):([A-Za-z0-9_.-]{1,64})", re.ASCII)


class InvalidCursor(ValueError):
    """A composite Last-Event-ID that cannot be read."""


def source_key(kind: str, name: str) -> str:
    """``job:<id>`` or ``channel:<name>``."""
    return f"{kind}:{name}"


def parse_composite(text: str | None, max_sources: int) -> dict[str, Position]:
    """Positions by source key from a composite id; empty for none."""
    if not text:
        return {}
    cursors: dict[str, Position] = {}
    parts = text.split(",")
    if len(parts) > max_sources:
        raise InvalidCursor("Last-Event-ID names more sources than the request")
    for part in parts:
        key, sep, value = part.rpartition("=")
        if not sep or not _SOURCE.fullmatch(key):
            raise InvalidCursor("Last-Event-ID must look like job:<id>=<n>,channel:<name>=<epoch>-<n>")
        try:
            cursors[key] = parse_position(value)
        except ValueError:
            raise InvalidCursor("Last-Event-ID must look like job:<id>=<n>,channel:<name>=<epoch>-<n>") from None
    return cursors


def format_composite(cursors: Iterable[tuple[str, Position]]) -> str:
    """The composite id for (source key, position) pairs, in the order given."""
    return ",".join(f"{key}={position.event_id}" for key, position in cursors)


def source_id_json(key: str, position: Position) -> bytes:
    """A source's own event id as JSON: a number for a job, a string (``<epoch>-<n>``) for a channel."""
    return str(position.offset).encode("ascii") if is_job_key(key) else b'"%s"' % position.event_id.encode("ascii")


def retag(event: LogEvent, source: str, source_id: bytes, composite_id: str) -> bytes:
    """The event as a multiplexed frame: same type, data wrapped with its source and own id (``source_id_json``)."""
    return b"".join(
        (
            b"id: ", composite_id.encode("ascii"),
            b"\nevent: ", event.kind.encode("ascii"),
            b'\ndata: {"source":"', source.encode("ascii"),
            b'","id":', source_id,
            b',"data":', event.data, b"}\n\n",
        )
    )


def missed_field(source: str) -> str:
    """What a gap counts for a source: output bytes of a job, messages of a channel."""
    return "missed_bytes" if is_job_key(source) else "missed_messages"


def retag_gap(source: str, missed: int, composite_id: str) -> bytes:
    """A multiplexed ``gap`` event for one source."""
    field = missed_field(source)
    return f'id: {composite_id}\nevent: gap\ndata: {{"source":"{source}","{field}":{missed}}}\n\n'.encode("ascii")


def retag_reset(source: str, composite_id: str) -> bytes:
    """A multiplexed ``reset`` event: the source's history is another than the cursor's (what was missed is unknown)."""
    return f'id: {composite_id}\nevent: reset\ndata: {{"source":"{source}","missed":"unknown"}}\n\n'.encode("ascii")
