"""GET /jobs/<id>/output: a job's combined raw output, byte-exact, followed live. Not SSE.

If the log drops bytes this reader has not sent yet, the response is aborted
rather than silently spliced: raw bytes have no way to say "something is
missing here". Raw bytes have no heartbeat either, so a departed client is
noticed by watching its socket.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

from gevent.event import Event

from ..config import Settings
from ..store.base import LogRead, Store, StoreUnavailable, UnknownLog
from .wire import hangup_event

log = logging.getLogger(__name__)


def job_output_stream(
    store: Store, key: str, settings: Settings, shutdown: Event, client_socket: socket.socket | None = None,
    first: LogRead | None = None,
) -> Iterator[bytes]:
    """The output of the job whose log is ``key``, until the job ends (or the client or the server goes).

    ``first``: the log's first read (``store.read(key, 0)``), made by the caller to learn what is missing.
    """
    with hangup_event(client_socket) as gone:
        # An empty first write makes gunicorn send the headers before any output exists.
        yield b""
        yield from _follow_output(store, key, settings, (shutdown, gone), first)


def _follow_output(
    store: Store, key: str, settings: Settings, stop: tuple[Event, ...], read: LogRead | None
) -> Iterator[bytes]:
    cursor = 0
    first = True
    while True:
        try:
            if read is None:
                read = store.read(key, cursor)
        except (UnknownLog, StoreUnavailable):
            return
        if read.missed and not first:
            log.warning("%s: /output reader fell %d bytes behind the buffer; aborting", key, read.missed)
            raise ConnectionAbortedError("output reader fell behind the buffer")
        first = False
        chunk = b"".join(event.raw for event in read.events if event.raw)
        if read.events:
            cursor = read.events[-1].id
        if chunk:
            yield chunk
        if read.finished or any(event.is_set() for event in stop):
            return
        if not read.events:
            store.wait(key, cursor, settings.heartbeat_interval, wake=stop)
        read = None
