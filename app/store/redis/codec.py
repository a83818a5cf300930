"""Events and job records as Redis fields, and back. Pure.

A stream entry holds an event's frame without its ``id:`` line (``f``), its
kind (``k``), the output bytes it carries (``r``, output events only; ``o``
instead when they are ASCII, so the same as the text in the frame), its
audience (``a``, if any) and, for channels, its size as the byte budget counts
it (``z``). The entry's own id is ``<offset>-0``: the event's id, so a client's
``Last-Event-ID: N`` is the stream position ``N``. Reading an entry back puts
the ``id:`` line in front again, giving the very bytes the writer encoded.

A job's record is a hash whose fields are the ``Job`` attributes, each as
JSON; fields starting with ``_`` are the store's own (the log's state).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ...states import JobState
from ...streaming._jsonescape import unescape
from ..base import LogEvent
from ..eventlog import EVENT_OVERHEAD_BYTES
from ..jobs import Job

_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


def frame_tail(frame: bytes) -> bytes:
    """The frame after its ``id:`` line (``event: ...\\ndata: ...\\n\\n``)."""
    return frame[frame.index(b"\n") + 1:] if frame.startswith(b"id: ") else frame


def event_size(event: LogEvent) -> int:
    """What the byte budget counts for an event (as the memory store does)."""
    return len(event.frame) + len(event.raw) + EVENT_OVERHEAD_BYTES


def entry_fields(event: LogEvent) -> dict[bytes, bytes]:
    """An event as a stream entry's fields."""
    fields = {b"k": event.kind.encode(), b"f": frame_tail(event.frame)}
    if event.raw:
        fields[b"r"] = event.raw
    if event.audience is not None:
        fields[b"a"] = event.audience.encode()
    return fields


def entry_offset(entry_id: bytes | str) -> int:
    """The offset of an entry id ``<n>-0``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def event_from_tail(offset: int, kind: str, tail: bytes, epoch: str = "", raw: bytes = b"",
                    audience: str | None = None) -> LogEvent:
    """An event from its frame's tail: the ``id:`` line (``<epoch>-<offset>`` or ``<offset>``) goes in front."""
    id_line = b"id: %s-%d\n" % (epoch.encode(), offset) if epoch else b"id: %d\n" % offset
    # The tail is "event: <kind>\ndata: <JSON>\n\n": the JSON starts after its "data: ".
    data_start = len(id_line) + 7 + len(kind.encode()) + 7
    return LogEvent(offset, kind, id_line + tail, data_start, raw, audience)


def event_from_entry(entry_id: bytes, fields: dict[bytes, bytes], epoch: str = "") -> LogEvent:
    """A stream entry as an event."""
    audience = fields.get(b"a")
    event = event_from_tail(
        entry_offset(entry_id), fields[b"k"].decode(), fields[b"f"], epoch, fields.get(b"r", b""),
        audience.decode() if audience is not None else None,
    )
    if b"o" in fields:  # ASCII output: its bytes are its text
        event = event._replace(raw=ascii_output(event))
    return event


_heads: dict[str, bytes] = {}


def ascii_output(event: LogEvent) -> bytes:
    """The bytes of ASCII output, from its frame's ``{"type": kind, "out": text}``: unescaped in C (about 2.5x
    the json module here, which is the Redis reader's largest cost per byte), or by the json module for any
    frame the C code does not take."""
    head = _heads.get(event.kind)
    if head is None:
        head = _heads[event.kind] = b'{"type":%s,"out":"' % json.dumps(event.kind).encode()
    frame, start = event.frame, event.data_start + len(head)
    if frame.startswith(head, event.data_start) and frame.endswith(b'"}\n\n'):
        raw = unescape(frame, start, len(frame) - 4)
        if raw is not None:
            return raw
    return json.loads(event.data)["out"].encode("ascii")


def job_fields(job: Job, **extra: Any) -> dict[str, str]:
    """A job's record as hash fields (``extra``: more attributes, or the store's own ``_`` fields)."""
    fields = {name: json.dumps(getattr(job, name)) for name in _JOB_FIELDS}
    fields.update({name: value if name.startswith("_") else json.dumps(value) for name, value in extra.items()})
    return fields


def encode_fields(values: dict[str, Any]) -> dict[str, str]:
    """Some of a job's attributes as hash fields."""
    return {name: json.dumps(value) for name, value in values.items()}


def job_from_fields(fields: dict[bytes, bytes]) -> Job | None:
    """A job from its hash (None if the hash holds no record)."""
    values = {}
    for name in _JOB_FIELDS:
        raw = fields.get(name.encode())
        if raw is not None:
            values[name] = json.loads(raw)
    if "id" not in values:
        return None
    values["argv"] = tuple(values.get("argv") or ())
    values["state"] = JobState(values.get("state", JobState.RUNNING))
    return Job(**values)
