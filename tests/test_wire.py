"""The contract between direct delivery and gunicorn (app/streaming/wire.py), checked against gunicorn itself.

Direct delivery writes chunks to the client's socket between two of gunicorn's own writes of the same
response. If a gunicorn upgrade changed how it frames a chunked body, where it puts the socket, or what that
socket is, streams would be corrupted (or silently lose direct delivery): these fail first.
"""

from __future__ import annotations

import _socket

import gevent.socket
import pytest
from gunicorn.http.wsgi import Response, default_environ

from app.streaming.wire import LAST_CHUNK, SOCKET_KEY, ClientConnection, Wire, chunk, chunk_parts


class _Request:
    """What gunicorn's Response asks of a parsed HTTP/1.1 GET."""

    version = (1, 1)
    method = "GET"
    body = b""
    query = ""
    uri = "/channels/x/events"

    def should_close(self) -> bool:
        return False


class _Config:
    protocol = "http"
    errorlog = "-"
    workers = 1


class _RecordingSocket:
    def __init__(self) -> None:
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data


FRAMES = [b"retry: 2000\n\n: connected\n\n", b"id: 1\nevent: message\ndata: {}\n\n", b"x" * 70_000, b": ping\n\n"]


def test_gunicorns_chunked_writer_frames_a_body_exactly_as_the_wire_does():
    sock = _RecordingSocket()
    response = Response(_Request(), sock, _Config())
    write = response.start_response("200 OK", [("Content-Type", "text/event-stream")])
    assert response.chunked
    for frame in FRAMES:
        write(frame)
    response.close()
    head, _, body = sock.sent.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"".join(chunk(frame) for frame in FRAMES) + LAST_CHUNK


@pytest.mark.parametrize("frame", FRAMES)
def test_chunk_parts_are_the_same_bytes_as_one_chunk(frame):
    assert b"".join(chunk_parts(frame)) == chunk(frame)
    assert chunk_parts(frame)[1] is frame  # sent without a copy


def test_gunicorn_hands_the_client_socket_over_where_the_wire_looks():
    sock = object()
    environ = default_environ(_Request(), sock, _Config())
    assert environ[SOCKET_KEY] is sock
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_a_gevent_socket_wraps_a_non_blocking_os_socket_that_direct_delivery_writes_to():
    left, right = gevent.socket.socketpair()
    try:
        environ = {SOCKET_KEY: left, "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_METHOD": "GET",
                   "wsgi.url_scheme": "http", "PATH_INFO": "/x"}
        connection = ClientConnection.from_environ(environ)
        assert connection is not None and isinstance(connection.sock, _socket.socket)
        assert connection.sock.gettimeout() == 0.0  # send() never blocks the appending greenlet
        connection.sock.send(chunk(b"data: hi\n\n"))
        assert right.recv(100) == b"A\r\ndata: hi\n\n\r\n"
        assert Wire.from_environ(environ).sock is left
        # Anything but a plain HTTP/1.1 GET over http is never written to directly.
        for change in ({"SERVER_PROTOCOL": "HTTP/1.0"}, {"REQUEST_METHOD": "HEAD"}, {"wsgi.url_scheme": "https"}):
            assert ClientConnection.from_environ({**environ, **change}) is None
    finally:
        left.close()
        right.close()


def test_outside_gunicorn_there_is_no_wire():
    wire = Wire.from_environ({"SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_METHOD": "GET", "wsgi.url_scheme": "http"})
    assert wire.sock is None and wire.connection is None
