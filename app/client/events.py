"""An SSE stream that survives network drops: httpx-sse parses it, this module reconnects.

httpx-sse 0.4 has no reconnect and two traps (see the reference notes), handled here:
- a cut raises httpx.RemoteProtocolError or ReadError (both TransportError), and a clean close just ends
  ``iter_sse()``: either way the follower reconnects with ``Last-Event-ID`` after the server's ``retry:``
  delay, backing off while attempts fail, and keeps the last id itself (httpx-sse's decoder starts afresh
  on each connection);
- after any ``id:``, every heartbeat comment yields a phantom event with empty data (httpx-sse issue #35),
  as does a frame with only ``retry:``: events without data are skipped (this server never sends one).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource

from .api import RETRYABLE_STATUSES, Api, ClientError, describe_transport_error, retry_after

DEFAULT_RETRY_MS = 2000  # until the server sends its own retry:
MAX_BACKOFF = 30.0
DEFAULT_RECONNECT_FOR = 300.0  # seconds without a working connection before giving up


@dataclass(frozen=True)
class Event:
    """One event: its type, its JSON data, and its id (None for events without one, such as ``gap``)."""

    type: str
    data: Any
    id: str | None


def is_repeat(event_id: str, last_id: str | None) -> bool:
    """Whether an event was delivered already: its numeric id is not past the last one. Pure."""
    if last_id is None or not (event_id.isdigit() and last_id.isdigit()):
        return False
    return int(event_id) <= int(last_id)


def backoff_delay(retry_ms: int, failures: int) -> float:
    """Seconds before reconnect attempt number ``failures`` (1 = the first after a drop). Pure.

    The first waits the server's ``retry:`` delay, as a browser would; each failed attempt doubles it, up to
    30 s (or the server's delay, if longer).
    """
    base = max(retry_ms, 0) / 1000
    return min(base * 2 ** max(failures - 1, 0), max(base, MAX_BACKOFF))


def _parse_data(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class Follower:
    """Follows one SSE URL to its end, across reconnects, handing each event to ``handle`` exactly once."""

    FINISHED = "finished"  # the handler said the stream is complete
    NO_CONTENT = "no_content"  # the server answered 204: nothing follows the last id

    def __init__(
        self, api: Api, path: str, *, after: str | None = None, reconnect_for: float = DEFAULT_RECONNECT_FOR,
        on_status: Callable[[str], None] = lambda message: None,
        held: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
        patient: bool = False,
    ) -> None:
        self.api = api
        self.path = path
        self.last_id = after
        self.retry_ms = DEFAULT_RETRY_MS
        self.reconnect_for = reconnect_for
        self.on_status = on_status
        self.held = held  # the block that writes an event and records its id, safe from Ctrl-C
        self.connected = patient  # True: retry even a first connection that fails (the server was reached before)
        self.delivered = 0  # events delivered on the current connection

    def run(self, handle: Callable[[Event], bool]) -> str:
        """Deliver events until ``handle`` returns True (FINISHED) or the server answers 204 (NO_CONTENT)."""
        failures = 0
        last_contact = time.monotonic()
        while True:
            delay = None
            self.delivered = 0
            try:
                with self.api.stream(self.path, headers=self._headers()) as response:
                    status = response.status_code
                    if status == 204:
                        return self.NO_CONTENT
                    if status in RETRYABLE_STATUSES:
                        problem = f"the server answered {status}"
                        if "Retry-After" in response.headers:
                            delay = retry_after(response)
                    elif status != 200:
                        response.read()
                        raise self.api.refusal(response)
                    else:
                        self._check_content_type(response)
                        self.connected = True
                        if self._deliver(response, handle):
                            return self.FINISHED
                        problem = "the server closed the stream"
            except httpx.TransportError as exc:
                if not self.connected:
                    raise self.api.transport_error(exc) from None
                problem = describe_transport_error(exc, self.api.connection.url)
            if self.delivered:  # this connection made progress: start backing off afresh
                failures, last_contact = 0, time.monotonic()
            failures += 1
            if time.monotonic() - last_contact > self.reconnect_for:
                raise ClientError(f"{problem}; gave up reconnecting after {self.reconnect_for:g} s")
            delay = backoff_delay(self.retry_ms, failures) if delay is None else delay
            self.on_status(f"{problem}; reconnecting in {delay:.1f} s" +
                           (f" (after event {self.last_id})" if self.last_id else ""))
            time.sleep(delay)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        return headers

    def _check_content_type(self, response: httpx.Response) -> None:
        kind = response.headers.get("content-type", "").partition(";")[0].strip()
        if kind != "text/event-stream":
            raise ClientError(f"GET {self.path}: expected an event stream, got {kind or 'no content type'}")

    def _deliver(self, response: httpx.Response, handle: Callable[[Event], bool]) -> bool:
        """Hand one connection's events to ``handle`` (counting them in ``delivered``); True once it finished."""
        decoder_id = ""  # httpx-sse's last event id: it starts empty on each connection
        for sse in EventSource(response).iter_sse():
            # Per the SSE spec an event's id is the last id: line seen, so an event without one of its own (a gap)
            # repeats its predecessor's. Ids strictly increase, so an id of its own is one that changed.
            own_id = sse.id if sse.id and sse.id != decoder_id else None
            decoder_id = sse.id
            if sse.retry is not None:
                self.retry_ms = sse.retry
            if not sse.data:
                continue  # a phantom after a heartbeat, or a retry:-only frame
            if own_id is not None and is_repeat(own_id, self.last_id):
                continue
            event = Event(sse.event, _parse_data(sse.data), own_id)
            with self.held():
                finished = handle(event)
                if own_id is not None:
                    self.last_id = own_id
            self.delivered += 1
            if finished:
                return True
        return False
