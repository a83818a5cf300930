"""Direct delivery (app/streaming/delivery.py) against real gunicorn.

A caught-up HTTP/1.1 stream has new events written straight to its socket by
whoever appends them. These tests pin what that must never change: every
event exactly once and in order, valid chunked framing, byte-exact output,
slow readers that catch up, and the same results for HTTP/1.0 (the pull path).
"""

from __future__ import annotations

import json
import socket
import time

import httpx

from .channel_support import Dechunker, Subscriber, fresh, id_number, publish, subscribers
from .server import PYTHON, helper, wait_until
from .sse_parser import EventStreamParser


class RawStream:
    """An HTTP/1.1 response read off a raw socket: head, then the chunked body de-chunked strictly and parsed."""

    def __init__(self) -> None:
        self.head = b""
        self.dechunk = Dechunker()
        self.parser = EventStreamParser()

    def feed(self, data: bytes) -> None:
        """Take bytes as they arrived on the socket."""
        if not self.head.endswith(b"\r\n\r\n"):
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            self.head, _, data = self.head.partition(b"\r\n\r\n")
            self.head += b"\r\n\r\n"
        self.parser.feed(self.dechunk.feed(data))


def _seqs(sub: Subscriber) -> list[int]:
    return [json.loads(event.data)["data"]["seq"] for event in sub.events if event.type == "message"]


def test_many_subscribers_on_both_protocols_get_every_message_once_and_in_order(make_server):
    srv = make_server({"SSECMD_HEARTBEAT_INTERVAL": "1"})
    channel = fresh("direct")
    path = f"/channels/{channel}/events"
    subs = [Subscriber(srv, path, http11=n % 2 == 0).connected() for n in range(40)]
    try:
        assert wait_until(lambda: subscribers(srv, channel) == 40, 5)
        count = 150
        with httpx.Client(timeout=10) as client:
            for seq in range(count):
                answer = client.post(srv.url(f"/channels/{channel}/messages"), json={"data": {"seq": seq}})
                assert answer.status_code == 201, answer.text
                if seq % 50 == 0:
                    time.sleep(1.2)  # heartbeats in between: streams leave and re-enter their parked state
        for sub in subs:
            sub.wait_events(count, timeout=15)
            assert _seqs(sub) == list(range(count))
            ids = [id_number(event.last_event_id) for event in sub.events if event.type == "message"]
            assert ids == list(range(1, count + 1))
    finally:
        for sub in subs:
            sub.close()


def test_a_slow_http11_reader_catches_up_without_loss_duplicates_or_bad_framing(make_server):
    srv = make_server({"SSECMD_SEND_TIMEOUT": "20", "SSECMD_CHANNEL_HISTORY_BYTES": str(64 * 1024 * 1024)})
    channel = fresh("slow")
    # A tiny receive window and no reading at first: direct sends stop fitting within a few messages,
    # so the stream is detached mid-frame, writes the rest itself and goes back to reading the log.
    slow = Subscriber(srv, f"/channels/{channel}/events", rcvbuf=4096, read=False)
    try:
        assert wait_until(lambda: subscribers(srv, channel) == 1, 5)
        count, size = 300, 30_000  # far more than the socket buffers hold
        with httpx.Client(timeout=10) as client:
            for seq in range(count):
                answer = client.post(
                    srv.url(f"/channels/{channel}/messages"), json={"data": {"seq": seq, "pad": "p" * size}}
                )
                assert answer.status_code == 201
        # Now read everything, slowly at first.
        stream = RawStream()
        parser = stream.parser
        slow.sock.settimeout(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.002 if len(parser.events) < 20 else 0)
            data = slow.sock.recv(65536)
            assert data, "the server closed the stream"
            stream.feed(data)
            if sum(event.type == "message" for event in parser.events) >= count:
                break
        assert b"transfer-encoding: chunked" in stream.head.lower()
        messages = [json.loads(event.data)["data"] for event in parser.events if event.type == "message"]
        assert [m["seq"] for m in messages] == list(range(count))
        assert all(m["pad"] == "p" * size for m in messages)
        assert not any(event.type == "gap" for event in parser.events)
        # Caught up again: a new message arrives promptly.
        publish(srv, channel, {"seq": count, "pad": ""})
        while sum(event.type == "message" for event in parser.events) <= count:
            stream.feed(slow.sock.recv(8192))
        assert json.loads(parser.events[-1].data)["data"]["seq"] == count
    finally:
        slow.close()


def test_a_stalled_http11_subscriber_is_dropped_and_logged(make_server):
    srv = make_server({"SSECMD_SEND_TIMEOUT": "2", "SSECMD_CHANNEL_HISTORY_BYTES": str(64 * 1024 * 1024)})
    channel = fresh("stall")
    stalled = Subscriber(srv, f"/channels/{channel}/events", rcvbuf=4096, read=False)
    reader = Subscriber(srv, f"/channels/{channel}/events").connected()
    try:
        assert wait_until(lambda: subscribers(srv, channel) == 2, 5)
        with httpx.Client(timeout=10) as client:
            for seq in range(100):
                client.post(srv.url(f"/channels/{channel}/messages"), json={"data": {"seq": seq, "pad": "x" * 30_000}})
        reader.wait_events(100, timeout=15)
        assert wait_until(lambda: f"dropping stream /channels/{channel}/events" in srv.log(), 15), srv.log()[-2000:]
        assert wait_until(lambda: subscribers(srv, channel) == 1, 10)
        assert stalled.drain_to_eof(10), "the server kept the stalled connection open"
        publish(srv, channel, {"seq": 100, "pad": ""})
        reader.wait_events(101)
        assert _seqs(reader)[-1] == 100
    finally:
        stalled.close()
        reader.close()


def _run_raw(srv, argv: list[str], pause_every: int = 0) -> tuple[bytes, list]:
    """GET /run over a raw HTTP/1.1 socket, read in small pieces (with pauses), de-chunked strictly."""
    query = httpx.QueryParams({"command": " ".join(argv)})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # a small window: the server's sends fill up
    sock.settimeout(30)
    sock.connect(("127.0.0.1", srv.port))
    sock.sendall(f"GET /run?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    stream, reads = RawStream(), 0
    with sock:
        time.sleep(0.3)  # not reading yet: the job's output piles up on the server's side
        while not stream.dechunk.done:
            data = sock.recv(4096)
            assert data, "connection closed before the last chunk"
            reads += 1
            if pause_every and reads % pause_every == 0:
                time.sleep(0.01)
            stream.feed(data)
    return stream.head, stream.parser.events


def test_run_output_is_byte_exact_for_a_slow_http11_reader(make_server):
    srv = make_server()
    # Every kind of byte the JSON escaping treats specially, and a two-byte character.
    unit = b'line "quoted" back\\slash \x1b[1mbold\x1b[0m tab\t caf\xc3\xa9 cr\r\n'
    repeat = 50_000 // len(unit)
    # Twelve bursts with pauses between: the stream catches up and parks between them, so the bursts
    # are written directly, into a socket that fills up (the client is not reading at first).
    bursts = [f"out:{unit.hex()}*{repeat}:0.05"] * 12
    head, events = _run_raw(srv, [PYTHON, helper("emit.py"), *bursts], pause_every=100)
    assert b" 200 " in head.split(b"\r\n")[0]
    out = b"".join(json.loads(e.data)["out"].encode("utf-8") for e in events if e.type == "stdout")
    assert out == unit * repeat * 12
    ids = [int(e.last_event_id) for e in events]  # a job's ids: no epoch
    assert ids == sorted(set(ids))
    assert events[-1].type == "exit" and json.loads(events[-1].data)["code"] == 0


def test_a_channel_message_named_exit_does_not_end_parked_streams(make_server):
    # Only a job's log ends; on a channel, "exit" and "err" are ordinary event names a publisher may choose.
    srv = make_server()
    channel = fresh("names")
    with Subscriber(srv, f"/channels/{channel}/events").connected() as sub:
        assert wait_until(lambda: subscribers(srv, channel) == 1, 5)
        publish(srv, channel, {"seq": 0}, event="exit")
        publish(srv, channel, {"seq": 1}, event="err")
        publish(srv, channel, {"seq": 2})
        events = sub.wait_events(3)
        assert [event.type for event in events] == ["exit", "err", "message"]
        assert not sub.ended and not sub.complete
