"""Shared pieces of the channel tests (tests/test_channels*.py): publishing, live subscribers, small checks.

Live subscribers are raw sockets, each read by its own thread into the tests'
WHATWG parser; closing one shuts its socket down at once. They speak HTTP/1.1
as browsers and curl do (the server then writes events straight to the socket
once a stream has caught up, see app/streaming/delivery.py), and the chunked framing is
checked strictly; ``http11=False`` speaks HTTP/1.0 (no framing, the pull path).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from typing import Any

import httpx

from .auth_support import assert_error as assert_json_error  # noqa: F401 - the channel tests' name for it
from .server import GunicornServer
from .sse_parser import EventStreamParser, MessageEvent

TIMEOUT = httpx.Timeout(15, connect=5)
# No keep-alive: stopping a server never waits for an idle connection of ours.
HTTP = httpx.Client(timeout=TIMEOUT, headers={"Connection": "close"})
_MISSING = object()
CHANNEL_ID = re.compile(r"([0-9a-z]{1,32})-([0-9]{1,19})")  # a channel's event id: <epoch>-<n>


def id_number(event_id: str) -> int:
    """The message number of a channel event id ``<epoch>-<n>``."""
    match = CHANNEL_ID.fullmatch(event_id)
    assert match, f"not a channel event id: {event_id!r}"
    return int(match[2])


def epoch(event_id: str) -> str:
    """The epoch of a channel event id ``<epoch>-<n>``."""
    match = CHANNEL_ID.fullmatch(event_id)
    assert match, f"not a channel event id: {event_id!r}"
    return match[1]


def fresh(prefix: str = "ch") -> str:
    """A channel name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def publish_raw(
    server: GunicornServer, channel: str, body: bytes, content_type: str | None, headers: dict | None = None
) -> httpx.Response:
    """POST exact body bytes to a channel."""
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    return HTTP.post(server.url(f"/channels/{channel}/messages"), content=body, headers=all_headers)


def publish(
    server: GunicornServer,
    channel: str,
    data: Any = _MISSING,
    *,
    event: str | None = None,
    text: str | None = None,
    headers: dict | None = None,
) -> dict:
    """Publish JSON {"data", "event"} (or a plain-text body with ``text=``); returns the 201 answer."""
    if text is not None:
        response = publish_raw(server, channel, text.encode("utf-8"), "text/plain; charset=utf-8", headers)
    else:
        body: dict[str, Any] = {"data": data}
        if event is not None:
            body["event"] = event
        response = publish_raw(server, channel, json.dumps(body).encode(), "application/json", headers)
    assert response.status_code == 201, (response.status_code, response.text)
    answer = response.json()
    assert answer["channel"] == channel
    assert answer["event"] == (event or "message")
    assert isinstance(answer["id"], str) and CHANNEL_ID.fullmatch(answer["id"]), answer
    return answer


def channel_list(server: GunicornServer, headers: dict | None = None) -> dict[str, dict]:
    """GET /channels, by name."""
    response = HTTP.get(server.url("/channels"), headers=headers or {})
    assert response.status_code == 200, response.text
    return {entry["name"]: entry for entry in response.json()["channels"]}


def subscribers(server: GunicornServer, channel: str) -> int:
    """The subscriber count GET /channels reports for a channel (0 if not listed)."""
    entry = channel_list(server).get(channel)
    return entry["subscribers"] if entry else 0


def wait_subscribers(server: GunicornServer, channel: str, count: int, *, poke: bool = True,
                     timeout: float = 10) -> bool:
    """Wait until GET /channels shows ``count`` subscribers.

    A departed client is only noticed when a write to it fails (the second one
    after it hung up): with ``poke`` a small message is published while waiting
    so that happens at once instead of after two heartbeats.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subscribers(server, channel) == count:
            return True
        if poke and channel not in ("jobs", "stats"):
            publish_raw(server, channel, b"poke", "text/plain")
        time.sleep(0.05)
    return subscribers(server, channel) == count


def envelope(event: MessageEvent) -> dict:
    """A channel message's data: {"data", "user", "time"}."""
    return json.loads(event.data)


class Subscriber:
    """A live SSE GET on a raw socket, read by a background thread."""

    def __init__(
        self,
        server: GunicornServer,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        rcvbuf: int | None = None,
        read: bool = True,
        parse: bool = True,
        keep_body: bool = True,
        http11: bool = True,
    ) -> None:
        """``read=False``: a client that never reads; ``parse=False``: frames only (fast, for floods)."""
        self.path = path
        self.keep_body = keep_body
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", server.port))
        if http11:
            lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        else:
            lines = [f"GET {path} HTTP/1.0", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.received = 0  # body bytes
        self.parse = parse
        self.parser = EventStreamParser()
        self.ended = False
        self._partial = b""
        self._chunks: Dechunker | None = None  # set when the response is chunked
        self.error: AssertionError | None = None
        self._frames: list[bytes] = []  # complete event frames (comments and retry left out)
        self.frame_times: list[float] = []  # time.monotonic() at each frame's arrival
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        if read:
            self._thread = threading.Thread(target=self._read, name=f"sub {path}", daemon=True)
            self._thread.start()

    def _read(self) -> None:
        head = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                with self._cond:
                    if self.status is None:
                        head += chunk
                        if b"\r\n\r\n" not in head:
                            continue
                        head, _, chunk = head.partition(b"\r\n\r\n")
                        lines = head.decode("latin-1").split("\r\n")
                        for line in lines[1:]:
                            name, _, value = line.partition(":")
                            self.headers[name.strip().lower()] = value.strip()
                        self.status = int(lines[0].split()[1])
                        if self.headers.get("transfer-encoding") == "chunked":
                            self._chunks = Dechunker()
                    self._take(chunk if self._chunks is None else self._chunks.feed(chunk))
                    self._cond.notify_all()
        except OSError:
            pass
        except AssertionError as exc:  # bad chunked framing: fail the test that waits, not just this thread
            self.error = exc
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10) -> bool:
        """Wait until ``predicate(self)`` holds (or the stream ends); whether it holds."""
        with self._cond:
            self._cond.wait_for(lambda: predicate(self) or self.ended, timeout)
            if self.error is not None:
                raise self.error
            return bool(predicate(self))

    def connected(self, timeout: float = 10) -> Subscriber:
        """Wait for the status line and, on a 200, the first frame; returns self."""
        ok = self.wait_for(lambda s: s.status is not None and (s.status != 200 or s.received > 0), timeout)
        assert ok, f"{self.path}: no answer (status {self.status}, {bytes(self.body[:200])!r})"
        return self

    def wait_events(self, count: int, timeout: float = 10) -> list[MessageEvent]:
        """Wait for at least ``count`` events; returns them all."""
        ok = self.wait_for(lambda s: len(s.parser.events) >= count, timeout)
        events = self.events
        assert ok, f"{self.path}: {len(events)} of {count} events after {timeout} s (ended: {self.ended})"
        return events

    def wait_frames(self, count: int, timeout: float = 10) -> list[bytes]:
        """Wait for at least ``count`` complete frames; returns them all."""
        ok = self.wait_for(lambda s: len(s._frames) >= count, timeout)
        frames = self.frames()
        assert ok, f"{self.path}: {len(frames)} of {count} frames after {timeout} s (ended: {self.ended})"
        return frames

    def drain_to_eof(self, timeout: float) -> bool:
        """For a client that never read: read everything now; whether the server closed the connection."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(1 << 20):
                    return True
        except ConnectionResetError:
            return True  # closed with a reset: dropped all the same
        except TimeoutError:
            return False
        return False

    @property
    def events(self) -> list[MessageEvent]:
        """Events dispatched so far."""
        with self._cond:
            return list(self.parser.events)

    def _take(self, chunk: bytes) -> None:
        now = time.monotonic()
        self.received += len(chunk)
        if self.keep_body:
            self.body += chunk
        if self.parse:
            self.parser.feed(chunk)
        *blocks, self._partial = (self._partial + chunk).split(b"\n\n")
        for block in blocks:
            if block.startswith((b"id:", b"event:", b"data:")):
                self._frames.append(block + b"\n\n")
                self.frame_times.append(now)

    def frames(self) -> list[bytes]:
        """The complete event frames received so far, as raw bytes (comments and retry left out)."""
        with self._cond:
            return list(self._frames)

    @property
    def complete(self) -> bool:
        """A chunked response ended with its last (empty) chunk: the server ended the stream cleanly."""
        return self._chunks is not None and self._chunks.done

    @property
    def frame_count(self) -> int:
        """How many complete event frames arrived."""
        return len(self._frames)

    def close(self) -> None:
        """Hang up."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Dechunker:
    """HTTP/1.1 chunked transfer coding, decoded strictly: any framing error fails the test."""

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0  # bytes of the current chunk still to come
        self._need_crlf = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes in ``data`` (what arrived on the socket)."""
        self._buffer += data
        body = bytearray()
        while self._buffer and not self.done:
            if self._left:
                take = self._buffer[: self._left]
                body += take
                self._left -= len(take)
                self._buffer = self._buffer[len(take):]
                self._need_crlf = self._left == 0
                continue
            if self._need_crlf:
                if len(self._buffer) < 2:
                    break
                assert self._buffer[:2] == b"\r\n", f"chunk not followed by CRLF: {self._buffer[:40]!r}"
                self._buffer = self._buffer[2:]
                self._need_crlf = False
                continue
            line, sep, rest = self._buffer.partition(b"\r\n")
            if not sep:
                assert len(self._buffer) < 32, f"bad chunk size line: {self._buffer[:40]!r}"
                break
            assert line and all(c in b"0123456789abcdefABCDEF" for c in line), f"bad chunk size: {line!r}"
            self._left = int(line, 16)
            self._buffer = rest
            if self._left == 0:
                assert rest[:2] in (b"\r\n", b"\r", b""), f"bad last chunk: {rest[:40]!r}"
                self.done = True
        return bytes(body)


def read_events(server: GunicornServer, path: str, count: int, headers: dict | None = None,
                timeout: float = 10) -> list[MessageEvent]:
    """Open a stream, read exactly ``count`` events (failing if fewer arrive), hang up."""
    with Subscriber(server, path, headers) as sub:
        sub.connected()
        assert sub.status == 200, bytes(sub.body)
        return sub.wait_events(count, timeout)[:count]


def read_quietly(server: GunicornServer, path: str, headers: dict | None = None, settle: float = 0.3,
                 ) -> list[MessageEvent]:
    """Every event a stream sends within ``settle`` seconds (for "nothing more arrives" checks)."""
    with Subscriber(server, path, headers) as sub:
        sub.connected()
        assert sub.status == 200, bytes(sub.body)
        sub.wait_for(lambda s: False, settle)
        return sub.events
