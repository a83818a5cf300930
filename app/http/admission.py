"""Refusing new streams beyond ``max_streams``, at once and before any work is done.

A refused EventSource must come back later, not give up: an EventSource
fails for good on any status but 200, so a client that asks for
``text/event-stream`` gets a 200 carrying a ``busy`` event and a jittered
``retry:``, and the response ends. Anyone else gets a 503 JSON answer with
``Retry-After``. Either way the connection is closed after the answer, so
the slot it held is free for short requests at once.

Short requests (``/healthz``, ``POST /jobs``, ``DELETE``, publish, ``GET
/jobs``) are never refused here: the connections kept above ``max_streams``
(``connection_headroom``, see capacity.py) are theirs.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

from flask import Flask, Response, request

from .. import metrics
from ..streaming.sse import encode_json_event, encode_retry
from ..streaming.wire import shutdown_write
from .errors import error_response

log = logging.getLogger(__name__)

# Every view that answers with a long-lived body.
STREAM_ENDPOINTS = frozenset(
    {"run.run_command", "jobs.job_events", "jobs.job_output", "channels.subscribe", "events.multiplexed",
     "runs.run_events"}
)
_LOG_INTERVAL = 60.0


def busy_delay_ms(base_ms: int, rng: random.Random | None = None) -> int:
    """The reconnection delay for a refused stream: ``base_ms`` plus a random extra of up to as much again."""
    return base_ms + (rng or random).randint(0, base_ms)


def busy_frame(delay_ms: int, max_streams: int) -> bytes:
    """What a refused EventSource reads: when to come back, and why (no ``id``: its Last-Event-ID stays)."""
    message = f"this server holds its limit of {max_streams} streams; reconnecting in {delay_ms / 1000:.0f} s"
    payload = {"type": "busy", "retry_ms": delay_ms, "message": message}
    return encode_retry(delay_ms) + encode_json_event(payload, event="busy")


def wants_event_stream(accept: str | None) -> bool:
    """Whether an Accept header asks for text/event-stream (what every EventSource sends)."""
    return bool(accept) and any(
        part.split(";", 1)[0].strip().lower() == "text/event-stream" for part in accept.split(",")
    )


def busy_response(delay_ms: int, max_streams: int) -> Response:
    """The refusal of one stream, as the client can best take it; the connection closes after it."""
    if wants_event_stream(request.headers.get("Accept")):
        response = Response(busy_frame(delay_ms, max_streams), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-store"
    else:
        response = error_response(
            503, "busy", f"this server holds its limit of {max_streams} streams; try again later",
            headers={"Retry-After": str(math.ceil(delay_ms / 1000))},
        )
    # gunicorn drops a Connection header set by the app; ending our side of the connection once
    # the answer is written frees its slot now rather than after the keep-alive timeout.
    environ = request.environ
    response.call_on_close(lambda: shutdown_write(environ))
    return response


class Admission:
    """Admits a new stream while fewer than ``max_streams`` are open; counts and logs refusals."""

    def __init__(self, max_streams: int, busy_retry_ms: int, open_streams: Callable[[], int]) -> None:
        self.max_streams = max_streams
        self.busy_retry_ms = busy_retry_ms
        self.open_streams = open_streams
        self.refused = 0
        self._logged_at = -math.inf
        self._refused_since_log = 0

    def check(self) -> Response | None:
        """None to go on, or the busy answer for a stream request beyond the limit."""
        if request.endpoint not in STREAM_ENDPOINTS or request.method not in ("GET", "HEAD"):
            return None
        if self.open_streams() < self.max_streams:
            return None
        self.refused += 1
        metrics.request_refused(503, "busy")
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_INTERVAL:
            # One line per interval, whatever the number of refusals (a reconnect storm must not flood the log).
            log.warning("refusing new streams: %d open, max_streams %d; %d refused since the last report",
                        self.open_streams(), self.max_streams, self._refused_since_log)
            self._logged_at, self._refused_since_log = now, 0
        return busy_response(busy_delay_ms(self.busy_retry_ms), self.max_streams)


def install(app: Flask, admission: Admission) -> None:
    """Refuse streams beyond the limit before anything else runs (authentication included)."""
    app.before_request(admission.check)
