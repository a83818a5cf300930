"""The client's connection as gunicorn hands it over: the one module that knows gunicorn's socket and chunks.

Direct delivery (delivery.py) writes chunks straight to the client's socket,
between two of gunicorn's own writes of the same response. That is sound only
while those writes are what gunicorn itself would have written: one complete
HTTP/1.1 chunk each, ``<size in hex>\\r\\n<bytes>\\r\\n``, on the non-blocking
OS-level socket under gevent's wrapper that gunicorn puts in the environ as
``gunicorn.socket``. Everything that depends on that lives here, and
tests/test_wire.py checks it against gunicorn's own chunked writer, so a
gunicorn upgrade that changes it fails a test instead of corrupting streams.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gevent
from gevent.event import Event
from gevent.socket import wait_read

from .. import metrics

log = logging.getLogger(__name__)

SOCKET_KEY = "gunicorn.socket"  # where gunicorn's WSGI environ holds the client's (gevent) socket
LAST_CHUNK = b"0\r\n\r\n"  # what gunicorn writes when a chunked response ends


def chunk(frame: bytes) -> bytes:
    """``frame`` as one HTTP/1.1 chunk, exactly as gunicorn's chunked writer frames it (one copy)."""
    return b"%X\r\n%b\r\n" % (len(frame), frame)


def chunk_parts(frame: bytes) -> tuple[bytes, bytes, bytes]:
    """``chunk(frame)`` in pieces for sendmsg, without copying ``frame``."""
    return (b"%X\r\n" % len(frame), frame, b"\r\n")


def client_socket(environ: dict) -> socket.socket | None:
    """The client's (gevent) socket, to watch for a hang-up; None outside gunicorn."""
    return environ.get(SOCKET_KEY)


@dataclass(slots=True)
class ClientConnection:
    """The client's socket, for writes that bypass gunicorn's response (see module docstring)."""

    sock: _socket.socket  # the non-blocking OS-level socket under gevent's wrapper: send() never yields
    wrapper: socket.socket  # gevent's socket, for a cooperative (blocking) sendall
    label: str = ""  # the request path, for the log
    pipelined: bool = False  # the client sent bytes: stop watching the socket for a hang-up
    sent: int = 0  # bytes written here, past gunicorn (its access log counts only its own)

    @classmethod
    def from_environ(cls, environ: dict) -> ClientConnection | None:
        """The connection of a plain HTTP/1.1 GET served by gunicorn, else None (no direct delivery)."""
        wrapper = environ.get(SOCKET_KEY)
        raw = getattr(wrapper, "_sock", None)
        if (
            environ.get("SERVER_PROTOCOL") != "HTTP/1.1"
            or environ.get("REQUEST_METHOD") != "GET"
            or environ.get("wsgi.url_scheme") != "http"
            or not isinstance(raw, _socket.socket)
            or hasattr(wrapper, "do_handshake")  # TLS: bytes must go through the SSL layer
            or raw.gettimeout() != 0.0
        ):
            return None
        return cls(raw, wrapper, environ.get("PATH_INFO", ""))


@dataclass(frozen=True, slots=True)
class Wire:
    """What a stream knows of its client: the socket to watch for a hang-up, and direct delivery's connection."""

    sock: socket.socket | None  # None outside gunicorn (a test client): no hang-up watch
    connection: ClientConnection | None  # None: this response cannot be delivered to directly

    @classmethod
    def from_environ(cls, environ: dict) -> Wire:
        """The wire of the request being served."""
        return cls(client_socket(environ), ClientConnection.from_environ(environ))


NO_WIRE = Wire(None, None)


class SlowClient(BrokenPipeError):
    """A stream's client stopped reading for ``send_timeout``: the stream is dropped (gunicorn sees EPIPE)."""


def send_rest(connection: ClientConnection, rest: bytes, timeout: float) -> None:
    """Write the end of a chunk a direct send left over; a client that takes too long is dropped."""
    with gevent.Timeout(timeout, False):
        connection.wrapper.sendall(rest)
        connection.sent += len(rest)
        return
    log.warning("dropping stream %s: its client stopped reading (%.0f s on one write)", connection.label, timeout)
    metrics.slow_subscriber_dropped()
    # EPIPE: gunicorn closes the connection without a traceback (half a chunk is on the wire).
    raise SlowClient(errno.EPIPE, "client stopped reading")


def watch_for_disconnect(sock: socket.socket | None, on_disconnect: Callable[[], None]) -> gevent.Greenlet | None:
    """Call ``on_disconnect`` as soon as the client closes its connection, even while the stream is silent.

    A WSGI app only learns of a closed client when a write fails. For GET /run
    that could be long after the user pressed Ctrl-C, so this greenlet waits
    for the socket to become readable and peeks: end-of-file means the client
    (or nginx in front of it) has gone. It never consumes bytes.
    """
    if sock is None:
        return None

    def watch() -> None:
        try:
            wait_read(sock.fileno())
            if not sock.recv(1, socket.MSG_PEEK):
                on_disconnect()
            # Otherwise the client sent something (a pipelined request): stop watching
            # rather than spin on a socket that stays readable.
        except OSError:
            on_disconnect()

    return gevent.spawn(watch)


@contextmanager
def hangup_event(sock: socket.socket | None) -> Iterator[Event]:
    """An Event set as soon as the client hangs up (see watch_for_disconnect), for as long as the block runs."""
    gone = Event()
    watcher = watch_for_disconnect(sock, gone.set)
    try:
        yield gone
    finally:
        if watcher is not None:
            watcher.kill(block=False)


def shutdown_write(environ: dict) -> None:
    """End our side of the client's connection once the answer is written (a refused stream frees its slot)."""
    sock = client_socket(environ)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
