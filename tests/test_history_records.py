"""The events file's records: ASCII output stored once (its raw bytes are its frame's text), read back exactly."""

from __future__ import annotations

import codecs
import io
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.process.runner import OutputPump
from app.store.history import records
from app.store.history.datadir import FORMAT_FILE, prepare_data_dir
from app.streaming.sse import OutputJSON, encode_json_frame


class _Log:
    """What the pump appends to: the frame encoded as the job log encodes it, the id counting raw bytes."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, bytes, int, bytes]] = []
        self.said_ascii: list[bool] = []  # the pump's ascii_out, event by event
        self.units = 0
        self.output_bytes = 0

    def append(self, kind, payload, raw=b"", audience=None, *, ascii_out=False):
        self.units += len(raw) if raw else 1
        frame, data_start = encode_json_frame(payload, kind, self.units)
        self.events.append((self.units, kind, frame, data_start, raw))
        self.said_ascii.append(ascii_out)


def _pumped(chunks: list[bytes], log: _Log | None = None) -> list[tuple[int, str, bytes, int, bytes]]:
    log = log or _Log()
    pump = OutputPump(log, Settings(), lambda: None)
    pump.decoders["stdout"] = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pump.pending["stdout"] = b""
    for data in chunks:
        pump._emit("stdout", data)
    pump._emit("stdout", b"", final=True)
    return log.events


def _file(events) -> io.BytesIO:
    return io.BytesIO(b"".join(records.encode_record(*event) for event in events))


def _v1_record(event_id: int, kind: str, frame: bytes, data_start: int, raw: bytes) -> bytes:
    """A record as format version 1 wrote every one: raw bytes always stored."""
    kind_bytes = kind.encode()
    rest = records.HEADER.pack(0, event_id, len(frame), len(raw), data_start, len(kind_bytes))[4:]
    crc = zlib.crc32(raw, zlib.crc32(frame, zlib.crc32(kind_bytes, zlib.crc32(rest))))
    return struct.pack("<I", crc) + rest + kind_bytes + frame + raw


@pytest.mark.parametrize("chunk", [b"hello\n", b"\r", b"\0", b"a\rb\r\n", b"\x7f\x1b[0m\t\"\\/", b"x" * 70_000])
def test_ascii_output_is_stored_once_and_read_back_byte_for_byte(chunk):
    events = _pumped([chunk])
    assert [event[4] for event in events] == [chunk]
    data = _file(events).getvalue()
    _, kind, frame, _, _ = events[0]
    assert len(data) == records.HEADER.size + len(kind) + len(frame)  # no second copy of the output
    scan = records.read_records(io.BytesIO(data), 0)
    assert not scan.damaged and scan.end == len(data)
    assert [tuple(e)[:5] for e in scan.events] == [tuple(e) for e in events]


@pytest.mark.parametrize("chunks", [
    [b"caf\xc3\xa9\n"],  # UTF-8
    [b"\xe2\x82", b"\xac\n"],  # a character split across reads
    [b"\xff\xfeok"],  # not UTF-8: the frame says U+FFFD, the bytes are kept
    [b"a\xe2", b"b\n"],  # ASCII bytes after a torn character: their text starts with U+FFFD
    [b"one\n", b"\xe2\x82\xac", b"two\r\n", b"\0"],
])
def test_output_that_is_not_its_text_keeps_its_bytes_and_everything_reads_back_exactly(chunks):
    events = _pumped(chunks)
    assert b"".join(event[4] for event in events) == b"".join(chunks)
    fh = _file(events)
    scan = records.read_records(fh, 0)
    assert not scan.damaged and scan.end == len(fh.getvalue())
    assert [tuple(e)[:5] for e in scan.events] == [tuple(e) for e in events]
    assert list(records.iter_records(fh)) == scan.events


def test_a_file_written_in_the_version_1_layout_reads_the_same():
    exit_event = (99, "exit", b"id: 99\nevent: exit\ndata: {}\n\n", 25, b"")
    events = [*_pumped([b"hello\n", b"caf\xc3\xa9", b"\r\0"]), exit_event]
    old = io.BytesIO(b"".join(_v1_record(*event) for event in events))
    scan = records.read_records(old, 0)
    assert not scan.damaged and scan.end == len(old.getvalue())
    assert [tuple(e)[:5] for e in scan.events] == [tuple(e) for e in events]
    assert [tuple(e)[:5] for e in records.read_records(_file(events), 0).events] == [tuple(e) for e in events]


@pytest.mark.parametrize("where", ["frame", "length", "kind"])
def test_a_damaged_record_of_ascii_output_is_caught_by_its_crc(where):
    events = _pumped([b"kept\n"]) + _pumped([b"garbled\n"])
    events[1] = (events[0][0] + 8, *events[1][1:])
    good = records.encode_record(*events[0])
    data = bytearray(_file(events).getvalue())
    at = {"frame": len(good) + records.HEADER.size + 6 + 30,  # inside the JSON text of the second record
          "length": len(good) + 16,  # its raw length: no longer SAME_AS_TEXT
          "kind": len(good) + records.HEADER.size}[where]
    data[at] ^= 0x01
    scan = records.read_records(io.BytesIO(bytes(data)), 0)
    assert scan.damaged and scan.end == len(good)
    assert [e.raw for e in scan.events] == [b"kept\n"]


def test_a_version_1_data_dir_is_read_and_marked_version_2_before_new_files_are_written(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / FORMAT_FILE).write_text("sse-commander-history 1\n")
    prepare_data_dir(str(data))
    assert (data / FORMAT_FILE).read_text() == "sse-commander-history 2\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60).map(lambda data: bytes(b & 0x7F for b in data))
       | st.lists(st.sampled_from([b"\\", b'"', b"\\n", b"n", b"u", b"\n", b"\r", b"\t", b"\b", b"\f", b"\0", b"/"]),
                  min_size=1, max_size=30).map(b"".join))
def test_the_bytes_rebuilt_from_an_ascii_frame_are_the_output_exactly(raw):
    for kind in ("stdout", "stderr"):
        frame, data_start = encode_json_frame(OutputJSON(kind, raw), kind, 7)
        assert records.raw_from_frame(frame, data_start) == raw


def _same_as_text_record(event_id: int, kind: str, frame: bytes, data_start: int, raw: bytes) -> bytes:
    """A record of ASCII output as the first (reverted) version 2 wrote it: raw length SAME_AS_TEXT, no length."""
    kind_bytes = kind.encode()
    rest = records.HEADER.pack(0, event_id, len(frame), records.SAME_AS_TEXT, data_start, len(kind_bytes))[4:]
    crc = zlib.crc32(frame, zlib.crc32(kind_bytes, zlib.crc32(rest)))
    return struct.pack("<I", crc) + rest + kind_bytes + frame


def test_frames_only_reads_decode_no_output_and_say_how_many_bytes_each_event_carried():
    events = _pumped([b"hello\n", b"caf\xc3\xa9", b"\r\0", b"\xff"])
    exit_event = (events[-1][0] + 1, "exit", b"id: 99\nevent: exit\ndata: {}\n\n", 25, b"")
    events.append(exit_event)
    for data in (_file(events).getvalue(), b"".join(_v1_record(*event) for event in events)):
        full = records.read_records(io.BytesIO(data), 0)
        frames = records.read_records(io.BytesIO(data), 0, raw=False)
        assert not frames.damaged and frames.end == full.end == len(data)
        assert [e.raw for e in frames.events] == [b""] * len(events)
        assert [(e.id, e.kind, e.frame, e.data_start) for e in frames.events] == [event[:4] for event in events]
        assert [e.size for e in frames.events] == [len(event[4]) for event in events] == [e.size for e in full.events]


def test_records_of_the_first_version_2_layout_read_the_same():
    events = _pumped([b"hello\n", b"caf\xc3\xa9", b"\r\0"])
    data = b"".join(_same_as_text_record(*event) if event[4].isascii() else records.encode_record(*event)
                    for event in events)
    for raw in (True, False):
        scan = records.read_records(io.BytesIO(data), 0, raw=raw)
        assert not scan.damaged and scan.end == len(data)
        assert [e.size for e in scan.events] == [len(event[4]) for event in events]
        if raw:
            assert [tuple(e)[:5] for e in scan.events] == [tuple(e) for e in events]


def test_a_text_record_whose_length_disagrees_with_its_frame_is_damage():
    (event,) = _pumped([b"twelve bytes"])
    good = bytearray(records.encode_record(*event))
    records.HEADER.pack_into(good, 0, 0, event[0], len(event[2]), 11, event[3], 6 | records.TEXT)
    good[:4] = struct.pack("<I", zlib.crc32(bytes(good[4:])))  # a good CRC over a length we never wrote
    scan = records.read_records(io.BytesIO(bytes(good)), 0)
    assert scan.damaged and not scan.events


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=12) | st.sampled_from([b"ok\n", b"\xe2\x82", b"\xac", b"\xff", b"\r\0"]),
                max_size=8))
def test_output_the_pump_says_is_ascii_is_stored_as_text(chunks):
    """The history trusts the pump's ascii_out instead of looking at the bytes again: never wrongly."""
    chunks = [chunk for chunk in chunks if chunk]  # the pump emits what a read returned: never nothing
    log = _Log()
    events = _pumped(chunks, log)
    assert b"".join(event[4] for event in events) == b"".join(chunks)
    for event, said in zip(events, log.said_ascii, strict=True):
        if said:
            assert records.is_text(event[1], event[2], event[4])
            assert records.raw_from_frame(event[2], event[3]) == event[4]
    if chunks and chunks[0].isascii():  # and it says so where it can
        assert log.said_ascii[0]
