"""Direct delivery: an append writes its frame straight to the sockets of the streams that are caught up.

Without it, each append wakes every stream's greenlet, which reads the log and
writes through gunicorn: a greenlet switch, a read and a copy per viewer per
event. That is what made one message to 2,000 subscribers take 160 ms, and a
line of output wait for a switch before it left the worker.

A stream that has caught up with its log parks here instead. The appending
greenlet (the runner, or the request that published) frames the event once and
sends those same bytes to each parked socket, never blocking: a socket that
cannot take the whole frame at once is detached with the unsent rest, and its
stream writes that rest itself (bounded by ``send_timeout``) and goes back to
reading the log. Parked streams cost no greenlet switch per event; their own
greenlet wakes only for a heartbeat, a hang-up, shutdown or detachment.

Only plain HTTP/1.1 GET responses are delivered directly: gunicorn frames
them as chunked, so each direct write is one complete chunk, written between
two of gunicorn's own writes of the same response.
"""

from __future__ import annotations

import _socket
import errno
import logging
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from gevent.event import Event
from gevent.hub import Waiter

from ..store.eventlog import EventLog, LogEvent

log = logging.getLogger(__name__)

_TIMED_OUT = object()
_JOIN_BELOW = 65536

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


@dataclass(slots=True)
class ClientConnection:
    """The client's socket, for writes that bypass gunicorn's response (see module docstring)."""

    sock: _socket.socket  # the non-blocking OS-level socket under gevent's wrapper: send() never yields
    wrapper: socket.socket  # gevent's socket, for a cooperative (blocking) sendall
    label: str = ""  # the request path, for the log
    pipelined: bool = False  # the client sent bytes: stop watching the socket for a hang-up

    @classmethod
    def from_environ(cls, environ: dict) -> ClientConnection | None:
        """The connection of a plain HTTP/1.1 GET served by gunicorn, else None (no direct delivery)."""
        wrapper = environ.get("gunicorn.socket")
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


def chunk_parts(frame: bytes) -> tuple[bytes, bytes, bytes]:
    """One HTTP/1.1 chunk holding ``frame``, as gunicorn would write it, in pieces for sendmsg (no copy)."""
    return (b"%X\r\n" % len(frame), frame, b"\r\n")


class Parked:
    """A stream caught up with its log: its ticket for waiting while appends are written to its socket.

    The stream's generator yields this ticket and the response body
    (streams.TrackedStream) calls ``wait``, so the generator's frame is not on
    the parked greenlet's stack: that, and a bare Waiter rather than an Event
    with a Timeout, is memory every idle subscriber saves.
    """

    __slots__ = (
        "connection",
        "cursor",
        "delivery",
        "ended",
        "gone",
        "leftover",
        "on_progress",
        "shutdown",
        "timed_out",
        "timeout",
        "visible",
        "waiter",
        "watcher",
        "woken",
    )

    def __init__(
        self,
        delivery: Delivery,
        connection: ClientConnection,
        cursor: int,
        visible: Callable[[LogEvent], bool] | None,
        on_progress: Callable[[int], None] | None,
        timeout: float,
        shutdown: Event,
    ) -> None:
        self.delivery = delivery
        self.connection = connection
        self.cursor = cursor  # id of the last event this stream has delivered or skipped
        self.visible = visible
        self.on_progress = on_progress
        self.timeout = timeout
        self.shutdown = shutdown
        self.leftover = b""  # the unsent end of a frame that did not fit; the stream writes it
        self.gone = False  # the client hung up
        self.ended = False  # the terminal event was delivered
        self.timed_out = False
        self.woken = False
        self.waiter: Waiter | None = None
        self.watcher = None  # the io watcher on the client's socket while parked

    def wait(self) -> None:
        """Park until detached, hung up, shut down or timed out (then ``timed_out``)."""
        self.timed_out = not self.delivery.park(self, self.timeout, self.shutdown)

    def readable(self) -> None:
        """The client's socket became readable while parked (called by the hub)."""
        # The client sends nothing on an SSE response: readable means it hung up
        # (or pipelined a request, which ends this response's direct delivery too).
        try:
            self.gone = not self.connection.sock.recv(1, _PEEK)
        except BlockingIOError:
            return
        except OSError:
            self.gone = True
        self.connection.pipelined = not self.gone
        if self.watcher is not None:
            self.watcher.stop()
        self.wake()

    def wake(self) -> None:
        """End the wait (from any greenlet; the switch itself runs in the hub)."""
        if self.waiter is not None and not self.woken:
            self.woken = True
            self.waiter.hub.loop.run_callback(self.waiter.switch, None)


class Delivery:
    """The parked streams of one event log, and the sends that reach them."""

    def __init__(self, log: EventLog) -> None:
        self.parked: dict[Parked, None] = {}  # ordered: first parked, first served
        self.terminal_kinds = log.terminal_kinds  # a job's exit/err; none for a channel
        log.add_listener(self.deliver)

    def deliver(self, event: LogEvent) -> None:
        """Send ``event`` to every parked stream that may see it; detach those that cannot take it now."""
        if not self.parked:
            return
        frame = event.frame
        # Chunked once, for every subscriber. A small frame (a message, a line) is copied into
        # one chunk and sent with send(), cheaper per subscriber than sendmsg(); a large one (a
        # flood of output) goes as three buffers and is never copied.
        if len(frame) < _JOIN_BELOW:
            joined, parts = b"%X\r\n%b\r\n" % (len(frame), frame), None
            size = len(joined)
        else:
            joined, parts = None, chunk_parts(frame)
            size = sum(map(len, parts))
        terminal = event.kind in self.terminal_kinds
        for stream in list(self.parked):
            if stream.visible is not None and not stream.visible(event):
                stream.cursor = event.id
                continue
            try:
                sock = stream.connection.sock
                sent = sock.send(joined) if joined is not None else sock.sendmsg(parts)
            except BlockingIOError:
                sent = 0
            except OSError:
                stream.gone = True
                self._detach(stream)
                continue
            stream.cursor = event.id
            if sent < size:
                stream.leftover = (joined if joined is not None else b"".join(parts))[sent:]
                self._detach(stream)
                continue
            if stream.on_progress is not None:
                stream.on_progress(event.id)
            if terminal:
                stream.ended = True
                self._detach(stream)

    def _detach(self, stream: Parked) -> None:
        self.parked.pop(stream, None)
        stream.wake()

    def park(self, stream: Parked, timeout: float, shutdown: Event) -> bool:
        """Hold ``stream`` here until it is detached, its client hangs up, shutdown, or ``timeout`` (False)."""
        _wake_on(shutdown)
        if shutdown.is_set():
            return True
        hub = gevent.get_hub()
        watcher = stream.watcher = hub.loop.io(stream.connection.sock.fileno(), 1)
        timer = hub.loop.timer(timeout)
        waiter = stream.waiter = Waiter(hub)
        stream.woken = False
        self.parked[stream] = None
        watcher.start(stream.readable)
        timer.start(waiter.switch, _TIMED_OUT)
        try:
            # A bare Waiter and a loop timer: an Event plus a Timeout cost every parked stream memory.
            return waiter.get() is not _TIMED_OUT
        finally:
            stream.waiter = stream.watcher = None
            timer.stop()
            timer.close()
            watcher.stop()
            watcher.close()
            self.parked.pop(stream, None)


def send_rest(connection: ClientConnection, rest: bytes, timeout: float) -> None:
    """Write the end of a frame a direct send left over; a client that takes too long is dropped."""
    with gevent.Timeout(timeout, False):
        connection.wrapper.sendall(rest)
        return
    log.warning("dropping stream %s: its client stopped reading (%.0f s on one write)", connection.label, timeout)
    # EPIPE: gunicorn closes the connection without a traceback (half a chunk is on the wire).
    raise BrokenPipeError(errno.EPIPE, "client stopped reading")


_deliveries: weakref.WeakKeyDictionary[EventLog, Delivery] = weakref.WeakKeyDictionary()
_linked_shutdowns: weakref.WeakSet[Event] = weakref.WeakSet()


def _wake_on(shutdown: Event) -> None:
    """When ``shutdown`` is set, wake every parked stream of every log (once per Event)."""
    if shutdown not in _linked_shutdowns:
        _linked_shutdowns.add(shutdown)
        shutdown.rawlink(_wake_all_parked)


def _wake_all_parked(_shutdown: Event) -> None:
    for delivery in list(_deliveries.values()):
        for stream in list(delivery.parked):
            delivery._detach(stream)


def delivery_for(log: EventLog) -> Delivery:
    """The log's Delivery, created on first use."""
    delivery = _deliveries.get(log)
    if delivery is None:
        delivery = _deliveries[log] = Delivery(log)
    return delivery
