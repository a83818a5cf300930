"""A job's events on disk: one append-only file of records, and a sparse index beside it. Pure I/O, no gevent.

``<id>.events`` holds the job's events in order, each as one record::

    crc32 u32 | event id u64 | frame length u32 | raw length u32 | data start u16 | kind length u8
    kind | frame | raw

(little-endian; the CRC covers everything after itself). The frame is the
encoded SSE frame exactly as it went out live, so a replay from disk is the
live stream byte for byte; ``raw`` is the output exactly as the command wrote
it, so ``/output`` is byte-exact too. Output that is ASCII is exactly the text
in its frame's JSON (``"out"``), so its record stores no ``raw`` at all: its
kind length has the ``TEXT`` bit set, the raw length still says how many bytes
the output was, and a reader that wants the bytes (``/output``, export) decodes
them from the frame; a replay of frames never needs them (format version 2).
Version 1 files never set that bit, and read as before. Records written by the
first, reverted, version 2 (raw length ``SAME_AS_TEXT``, no length) also read.

``<id>.index`` holds ``(event id, file offset)`` pairs (u64 each), one for the
first record at or past every ``INDEX_EVERY`` bytes of the events file, so a
resume from any id seeks instead of scanning. A torn or garbled record ends
what can be read: everything before it is kept, and the job is marked damaged.
"""

from __future__ import annotations

import bisect
import json
import os
import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

HEADER = struct.Struct("<IQIIHB")
INDEX_ENTRY = struct.Struct("<QQ")
INDEX_EVERY = 256 * 1024
MAX_RECORD_BYTES = 64 << 20  # larger than any event the runner makes (coalesce_bytes is far smaller)
# In the kind length byte: the record's output is ASCII, so the very text in its frame; no raw bytes are stored
# (half the bytes written for the common case) and the raw length is the output's. Kinds are far shorter.
TEXT = 0x80
# The raw length of such a record as the first version 2 wrote it (reverted before a release): read only.
SAME_AS_TEXT = 0xFFFFFFFF
OUTPUT_KINDS = frozenset(("stdout", "stderr"))  # events whose frame is {"type": ..., "out": <text>}
_CRC = struct.Struct("<I")


class StoredEvent(NamedTuple):
    """One event read back from disk."""

    id: int
    kind: str
    frame: bytes
    data_start: int
    raw: bytes  # b"" when read with raw=False
    size: int  # how many output bytes it carries (len(raw) when read with raw=True)


def is_text(kind: str, frame: bytes, raw: bytes) -> bool:
    """Whether an event's output is its frame's text exactly, so its record needs no raw bytes."""
    # ASCII output in an ASCII frame is its "out" text exactly. (ASCII bytes can follow a torn multi-byte
    # character the decoder still holds: their text starts with U+FFFD, the frame is not ASCII, raw is kept.)
    return bool(raw) and kind in OUTPUT_KINDS and raw.isascii() and frame.isascii()


def record_head(event_id: int, kind: str, frame: bytes, data_start: int, raw: bytes, raw_len: int, text: bool
                ) -> bytes:
    """A record's header and kind, to be followed by its frame and (unless ``text``) ``raw``; the CRC covers them."""
    kind_bytes = kind.encode()
    rest = HEADER.pack(0, event_id, len(frame), raw_len, data_start, len(kind_bytes) | (TEXT if text else 0))[4:]
    crc = zlib.crc32(frame, zlib.crc32(kind_bytes, zlib.crc32(rest)))
    return _CRC.pack(crc if text or not raw else zlib.crc32(raw, crc)) + rest + kind_bytes


def record_parts(event_id: int, kind: str, frame: bytes, data_start: int, raw: bytes) -> tuple[bytes, ...]:
    """One record as the parts to write one after the other (header and kind, frame, raw if stored): no copies."""
    text = is_text(kind, frame, raw)
    head = record_head(event_id, kind, frame, data_start, raw, len(raw), text)
    return (head, frame) if text or not raw else (head, frame, raw)


def encode_record(event_id: int, kind: str, frame: bytes, data_start: int, raw: bytes) -> bytes:
    """The bytes of one record."""
    return b"".join(record_parts(event_id, kind, frame, data_start, raw))


def raw_from_frame(frame: bytes, data_start: int) -> bytes:
    """The output bytes of a record stored as ``TEXT``: its frame's ``"out"`` text, which is ASCII."""
    return json.loads(frame[data_start:-2])["out"].encode("ascii")


def events_path(jobs_dir: str, job_id: str) -> str:
    """Where a job's events file lives (two-character fan-out keeps directories small)."""
    return os.path.join(jobs_dir, job_id[:2], job_id + ".events")


def index_path(jobs_dir: str, job_id: str) -> str:
    """Where a job's index file lives."""
    return os.path.join(jobs_dir, job_id[:2], job_id + ".index")


class Scan(NamedTuple):
    """What reading records found: the events, where reading stopped, and whether the file was damaged there."""

    events: list[StoredEvent]
    end: int  # file offset just after the last good record read
    damaged: bool  # stopped at a torn or garbled record (not at the end of the file)


def read_records(fh, offset: int, *, after: int = 0, limit: int = 512, max_bytes: int = 4 << 20,
                 raw: bool = True) -> Scan:
    """Records from ``offset``: those with id > ``after``, at most ``limit`` of them or about ``max_bytes``.

    ``raw=False``: the events come without their output bytes (``raw`` is b"", ``size`` says how many), for
    readers of frames only: no output is decoded from its frame, nor copied.
    """
    fh.seek(offset)
    events: list[StoredEvent] = []
    size = 0
    position = offset
    while len(events) < limit and size < max_bytes:
        header = fh.read(HEADER.size)
        if not header:
            return Scan(events, position, False)
        if len(header) < HEADER.size:
            return Scan(events, position, True)
        crc, event_id, frame_len, raw_len, data_start, kind_len = HEADER.unpack(header)
        text = kind_len & TEXT
        kind_len &= ~TEXT
        legacy = raw_len == SAME_AS_TEXT
        body_len = kind_len + frame_len + (0 if text or legacy else raw_len)
        if body_len > MAX_RECORD_BYTES or data_start > frame_len or (text and raw_len > frame_len):
            return Scan(events, position, True)
        body = fh.read(body_len)
        if len(body) < body_len or zlib.crc32(body, zlib.crc32(header[4:])) != crc:
            return Scan(events, position, True)
        if event_id > after:
            frame = body[kind_len : kind_len + frame_len]
            if legacy or (text and raw):
                try:
                    data = raw_from_frame(frame, data_start)
                except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError):
                    return Scan(events, position, True)  # a good CRC over a frame we never wrote
                if text and len(data) != raw_len:
                    return Scan(events, position, True)
                raw_len = len(data)
                if not raw:
                    data = b""
            elif raw and not text:
                data = body[kind_len + frame_len :]
            else:
                data = b""
            events.append(StoredEvent(event_id, body[:kind_len].decode(errors="replace"), frame, data_start, data,
                                      raw_len))
            size += body_len
        position += HEADER.size + body_len
    return Scan(events, position, False)


def iter_records(fh, offset: int = 0, *, raw: bool = True) -> Iterator[StoredEvent]:
    """Every good record from ``offset`` on (bounded memory: a batch at a time)."""
    while True:
        scan = read_records(fh, offset, limit=256, raw=raw)
        yield from scan.events
        if not scan.events:
            return
        offset = scan.end


def load_index(path: str) -> tuple[list[int], list[int]]:
    """The index's event ids and offsets (empty if there is none); a torn last entry is ignored."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return [], []
    ids: list[int] = []
    offsets: list[int] = []
    for event_id, offset in INDEX_ENTRY.iter_unpack(data[: len(data) - len(data) % INDEX_ENTRY.size]):
        ids.append(event_id)
        offsets.append(offset)
    return ids, offsets


def seek_offset(index: tuple[list[int], list[int]], after: int) -> int:
    """The offset of an indexed record at or before the first record with id > ``after``."""
    ids, offsets = index
    at = bisect.bisect_right(ids, after) - 1
    return offsets[at] if at >= 0 else 0


def last_good(path: str, index: tuple[list[int], list[int]]) -> tuple[StoredEvent | None, int, bool, int]:
    """The last good record, the offset after it, whether garbage or a torn record follows, and the file size.

    Scans from the last index entry that lies inside the file (bounded work for a long job).
    """
    size = os.path.getsize(path)
    _ids, offsets = index
    start = 0
    for offset in reversed(offsets):
        if offset < size:
            start = offset
            break
    last = None
    with open(path, "rb") as fh:
        offset = start
        while True:
            scan = read_records(fh, offset, limit=256, raw=False)
            if scan.events:
                last = scan.events[-1]
            offset = scan.end
            if scan.damaged or not scan.events:
                return last, offset, scan.damaged or offset < size, size
