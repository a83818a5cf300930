"""Reading what a client received: the HTTP response, chunked framing, SSE events; checking it byte for byte."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field

from .tools import BenchError


@dataclass
class Event:
    """One SSE event as a client sees it."""

    kind: str = "message"
    id: str | None = None
    data: str = ""
    end: int = 0  # offset in the body just past the blank line that ended the event


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and the body, dechunked if the response was chunked."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise BenchError(f"no complete HTTP header in {len(raw)} bytes: {raw[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, _ = dechunk(rest)
        return status, headers, body
    return status, headers, rest


def dechunk(data: bytes, base: int = 0) -> tuple[bytes, list[tuple[int, int]]]:
    """The body of a chunked message, and (body offset, offset in ``data`` + base) at each chunk's start."""
    parts: list[bytes] = []
    spans: list[tuple[int, int]] = []
    position = size_total = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            raise BenchError(f"chunked body cut short at byte {position} of {len(data)}")
        size = int(data[position:line_end].split(b";")[0], 16)
        if size == 0:
            break
        start = line_end + 2
        spans.append((size_total, base + start))
        parts.append(data[start : start + size])
        if len(parts[-1]) != size or data[start + size : start + size + 2] != b"\r\n":
            raise BenchError(f"chunk of {size} bytes at byte {start} is cut short")
        size_total += size
        position = start + size + 2
    return b"".join(parts), spans


def parse_events(body: bytes) -> list[Event]:
    """The events of an SSE body (comments, retry fields and an unfinished last event are skipped)."""
    events = []
    position = 0
    text = body
    while True:
        stop = text.find(b"\n\n", position)
        if stop < 0:
            break
        block = text[position:stop]
        position = stop + 2
        event = Event(end=position)
        data_lines = []
        seen = False
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"data":
                data_lines.append(value.decode("utf-8"))
                seen = True
            elif name == b"event":
                event.kind = value.decode("utf-8")
            elif name == b"id":
                event.id = value.decode("utf-8")
        if seen:
            event.data = "\n".join(data_lines)
            events.append(event)
    return events


@dataclass
class Delivery:
    """How a job's stdout arrived compared with what the command wrote."""

    received_bytes: int = 0
    missed_bytes: int = 0  # announced by gap events
    stdout_events: int = 0
    exit: dict | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every byte arrived, in order, unchanged, and the job exited 0."""
        return not self.problems and self.missed_bytes == 0


def check_job_stream(events: list[Event], expected: bytes) -> Delivery:
    """Check a job's events against the bytes its command wrote.

    Event ids count output bytes plus one per other event, so every stdout
    event says where its bytes sit in the output: each is compared with that
    slice of ``expected``, and gaps must be announced by ``gap`` events.
    """
    result = Delivery()
    position = 0  # output bytes accounted for so far
    other_events = 0
    for event in events:
        payload = json.loads(event.data)
        if event.kind == "stdout":
            chunk = payload["out"].encode("utf-8")
            end = int(event.id) - other_events
            start = end - len(chunk)
            if start != position:
                result.problems.append(f"stdout event {event.id} starts at byte {start}, expected {position}")
            if expected[start:end] != chunk:
                result.problems.append(f"stdout event {event.id}: bytes {start}..{end} differ from what was written")
            result.received_bytes += len(chunk)
            result.stdout_events += 1
            position = end
        elif event.kind == "gap":
            result.missed_bytes += payload["missed_bytes"]
            position += payload["missed_bytes"]
        elif event.kind in ("start", "exit", "err", "stderr"):
            if event.kind == "stderr":
                result.problems.append(f"unexpected stderr: {payload.get('out', '')[:200]!r}")
                continue
            other_events += 1
            if event.kind == "exit":
                result.exit = payload
            if event.kind == "err":
                result.problems.append(f"the command did not start: {payload}")
    if len(result.problems) > 5:
        result.problems = [*result.problems[:5], f"... {len(result.problems) - 5} more"]
    if position != len(expected):
        result.problems.append(f"output ends at byte {position}, the command wrote {len(expected)}")
    if result.exit is None:
        result.problems.append("no exit event")
    elif result.exit.get("code") != 0:
        result.problems.append(f"exit: {result.exit}")
    return result


def read_stamped(path: str) -> tuple[bytes, list[int], list[int]]:
    """A ``sink ... ts`` file: the bytes, the end offset of each read, and each read's arrival time (ns)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    parts, ends, stamps = [], [], []
    position = total = 0
    while position < len(raw):
        stamp = int.from_bytes(raw[position : position + 8], "little", signed=True)
        size = int.from_bytes(raw[position + 8 : position + 12], "little")
        parts.append(raw[position + 12 : position + 12 + size])
        position += 12 + size
        total += size
        ends.append(total)
        stamps.append(stamp)
    return b"".join(parts), ends, stamps


def arrival_of(offset: int, ends: list[int], stamps: list[int]) -> int:
    """When the byte just before ``offset`` (in the stream as read) arrived."""
    return stamps[bisect.bisect_left(ends, offset)]


def stamped_events(path: str) -> tuple[list[Event], list[int]]:
    """The SSE events of a timestamped HTTP response, each with the arrival time of its last byte."""
    raw, ends, stamps = read_stamped(path)
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        raise BenchError("no HTTP header in the stamped response")
    status, headers, _ = split_response(raw[: head_end + 4] + b"0\r\n\r\n")
    if status != 200:
        raise BenchError(f"status {status}: {raw[:300]!r}")
    body_start = head_end + 4
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, spans = dechunk(raw[body_start:], base=body_start)
    else:
        body, spans = raw[body_start:], [(0, body_start)]
    starts = [span[0] for span in spans]
    events = parse_events(body)
    arrivals = []
    for event in events:
        # The blank line ending the event is its last byte: map its body offset back to the raw stream.
        last = event.end - 1
        index = bisect.bisect_right(starts, last) - 1
        body_offset, raw_offset = spans[index]
        arrivals.append(arrival_of(raw_offset + (last - body_offset) + 1, ends, stamps))
    return events, arrivals
