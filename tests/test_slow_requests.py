"""Slow clients: a body that never arrives, a body nobody reads, headers that never end. None holds a slot for long."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from app.server.bodies import BodyTimeout, DeadlineInput, has_body


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took (seconds)."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received, time.monotonic() - started


def _status_and_json(received: bytes) -> tuple[int, dict]:
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_body_that_never_arrives_gets_408_within_the_default_deadline(make_server):
    srv = make_server()
    with _connect(srv.port) as sock:
        # The case: the headers of a login, then nothing.
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n")
        received, seconds = _read_until_closed(sock, 30)
    assert received, "the server neither answered nor closed the connection within 30 s"
    status, body = _status_and_json(received)
    assert status == 408 and body["error"] == "request_timeout"
    assert 9 <= seconds <= 15  # body_timeout defaults to 10 s
    assert httpx.get(srv.url("/healthz")).status_code == 200


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from .server import GunicornServer

    srv = GunicornServer(tmp_path_factory.mktemp("quick"), {"SSECMD_BODY_TIMEOUT": "1"}).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize(
    ("head", "sent"),
    [
        (b"POST /jobs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n", b'{"argv": ['),
        (b"POST /jobs HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n", b"5\r\n{\"arg"),
        (b"POST /channels/slow/messages HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n", b""),
    ],
    ids=["partial-body", "unfinished-chunks", "no-body"],
)
def test_a_slow_body_is_cut_off_with_408_and_the_connection_closed(quick, head, sent):
    with _connect(quick.port) as sock:
        sock.sendall(head + b"Host: 127.0.0.1\r\n\r\n" + sent)
        received, seconds = _read_until_closed(sock, 20)
    status, body = _status_and_json(received)
    assert status == 408 and body["error"] == "request_timeout" and "1 s" in body["message"]
    assert seconds < 5
    assert httpx.get(quick.url("/channels")).status_code == 200


def test_trickling_bytes_does_not_extend_the_deadline(quick):
    with _connect(quick.port) as sock:
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        started = time.monotonic()
        sock.settimeout(0.25)
        received = b""
        while not received and time.monotonic() - started < 10:
            try:
                sock.sendall(b" ")  # well-formed JSON whitespace, one byte every quarter second
                received = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert received.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 5


def test_an_unread_body_on_keep_alive_is_drained_within_the_keep_alive_timeout(quick):
    # GET /healthz never reads a body: gunicorn answers, then reads the announced body before the next
    # request, under its keep-alive timeout (5 s), and closes the connection when it does not come.
    with _connect(quick.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n")
        received, seconds = _read_until_closed(sock, 30)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert seconds < 9


def test_headers_that_never_end_are_closed_within_the_keep_alive_timeout(quick):
    # Covered by gunicorn itself: one timeout for a whole request head, its keep-alive (5 s),
    # so even a byte every half second does not keep the connection.
    with _connect(quick.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed = False
        sock.settimeout(0.5)
        while time.monotonic() - started < 20:
            try:
                sock.sendall(b"X")
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
    assert closed and time.monotonic() - started < 9


# The deadline itself (no server).


class _Stalling:
    """A body that delivers ``chunks`` one per read, sleeping ``delay`` before each."""

    def __init__(self, chunks: list[bytes], delay: float) -> None:
        self.chunks = chunks
        self.delay = delay

    def read(self, size=-1):
        import gevent

        gevent.sleep(self.delay)
        return self.chunks.pop(0) if self.chunks else b""

    readline = read


def test_deadline_input_passes_reads_that_finish_in_time():
    stream = DeadlineInput(_Stalling([b"ab", b"cd"], 0.01), 1.0)
    assert stream.read(2) == b"ab" and stream.readline() == b"cd" and stream.read() == b""


def test_deadline_input_is_one_deadline_for_all_reads():
    stream = DeadlineInput(_Stalling([b"a"] * 100, 0.05), 0.3)
    with pytest.raises(BodyTimeout) as raised:
        while stream.read(1):
            pass
    assert raised.value.code == 408


def test_deadline_input_refuses_at_once_after_the_deadline():
    stream = DeadlineInput(_Stalling([b"a"], 0.0), 5.0, now=time.monotonic() - 6)
    with pytest.raises(BodyTimeout):
        stream.read()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, False), ({"CONTENT_LENGTH": ""}, False), ({"CONTENT_LENGTH": "0"}, False),
     ({"CONTENT_LENGTH": "12"}, True), ({"HTTP_TRANSFER_ENCODING": "chunked"}, True)],
)
def test_which_requests_have_a_body(environ, expected):
    assert has_body(environ) is expected
