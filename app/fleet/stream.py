"""A run's event stream (``GET /runs/<id>/events``): every host's job events and host states on one SSE
response, ending with ``run_exit``. The frames are frames.py's; this is the loop that reads and waits.

It follows as many jobs as the run has hosts, whatever ``max_stream_sources`` says: it reads each job's log
through the store and waits on all of them at once (``Store.wait_any``), and looks at the run's record every
``POLL`` seconds for host states. A heartbeat comment keeps proxies open; a client hanging up ends it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import gevent
from gevent.event import Event

from ..config import Settings
from ..store.base import LogRead, Position, Store, StoreUnavailable, UnknownLog, job_key
from ..streaming.response import shutdown_farewell
from ..streaming.sse import HEARTBEAT, encode_comment, encode_retry
from .cursor import RunCursor
from .frames import step
from .runstate import Run

POLL = 0.25  # seconds: how often the run's record is looked at while its jobs are quiet


def run_events(
    store: Store, load: Callable[[], Run | None], cursor: RunCursor, settings: Settings, shutdown: Event,
    gone: Event,
) -> Generator[bytes, None, str]:
    """The stream's frames, from ``cursor`` on; returns why it ended (finished, client_left, shutdown)."""

    def read_log(job_id: str, after: int) -> LogRead | None:
        try:
            return store.read(job_key(job_id), Position("", after))
        except UnknownLog:  # forgotten: nothing more will come
            return None

    yield encode_retry(settings.retry_ms) + encode_comment("connected")
    quiet_since = time.monotonic()
    run: Run | None = None
    loaded_at = 0.0
    stale = True  # whether to look at the record again before the next read
    while True:
        try:
            if stale or time.monotonic() - loaded_at >= POLL:
                # Not on every read: while output pours in, the record is looked at every POLL seconds only.
                run, loaded_at, stale = load(), time.monotonic(), False
            if run is None:
                return "finished"  # forgotten meanwhile
            frames, more, waiting = step(run, cursor, read_log)
        except StoreUnavailable:
            yield encode_retry(settings.retry_ms) + encode_comment("the store is unavailable; reconnect to resume")
            return "finished"
        if frames:
            yield b"".join(frames)
            quiet_since = time.monotonic()
        if cursor.ended:
            return "finished"
        if more:
            continue
        if shutdown.is_set():
            yield shutdown_farewell(settings)
            return "shutdown"
        if gone.is_set():
            return "client_left"
        afters = {job_key(job): Position("", offset) for job, offset in waiting.items()}
        try:
            if afters:
                stale = not store.wait_any(afters, POLL, (shutdown, gone))  # quiet: the state may have changed
            else:
                gevent.wait([shutdown, gone], timeout=POLL, count=1)
                stale = True
        except (UnknownLog, StoreUnavailable):
            gevent.sleep(POLL)
            stale = True
        if time.monotonic() - quiet_since >= settings.heartbeat_interval:
            yield HEARTBEAT
            quiet_since = time.monotonic()
