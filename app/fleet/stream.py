"""A run's event stream (``GET /runs/<id>/events``): every host's job events and host states on one SSE
response, ending with ``run_exit``. The frames are frames.py's; this is the loop that reads and waits.

It follows as many jobs as the run has hosts, whatever ``max_stream_sources`` says: it reads each job's log
through the store and waits on all of them at once (``Store.wait_any``), together with the store's event for the
run's record (``Store.run_changed``): a host's job is followed from its first event as soon as the coordinator
has saved its id, and host states are sent as they change. The record is also looked at every ``RECHECK``
seconds, in case a notification was lost. A heartbeat comment keeps proxies open; a client hanging up ends it.

Like ``GET /run``, it stands in for a terminal: each running job it follows waits for it (``Store.pace``), so a
flood from many hosts merged into one viewer arrives whole, however slowly that viewer reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import gevent
from gevent.event import Event

from ..config import Settings
from ..store.base import LogRead, Pacing, Position, Store, StoreUnavailable, UnknownLog, job_key
from ..streaming.response import shutdown_farewell
from ..streaming.sse import HEARTBEAT, encode_comment, encode_retry
from .cursor import RunCursor
from .frames import step
from .runstate import Run

RECHECK = 1.0  # seconds: the record is looked at this often even unnotified (a store outage may lose one)
RETRY = 0.25  # seconds to wait after the store failed a wait, before reading again


def run_events(
    store: Store, run_id: str, load: Callable[[], Run | None], cursor: RunCursor, settings: Settings,
    shutdown: Event, gone: Event,
) -> Generator[bytes, None, str]:
    """The stream's frames, from ``cursor`` on; returns why it ended (finished, client_left, shutdown)."""
    paced: dict[str, Pacing | None] = {}  # job id -> its pacing (None: the store does not pace it)
    try:
        return (yield from _run_events(store, run_id, load, cursor, settings, shutdown, gone, paced))
    finally:
        for pacing in paced.values():
            if pacing is not None:
                pacing.close()


def _sent(store: Store, run: Run, cursor: RunCursor, waiting: dict[str, int], paced: dict[str, Pacing | None]) -> None:
    """Tell the jobs this stream follows how far it has sent them (and start pacing the ones new to it)."""
    for index, host in enumerate(run.hosts):
        if host.job is None:
            continue
        offset = cursor.hosts[index].offset
        if host.job not in paced:
            if host.job not in waiting:
                continue
            paced[host.job] = store.pace(job_key(host.job), offset, always=True)
        pacing = paced[host.job]
        if pacing is not None:
            pacing.read_through(offset)


def _run_events(
    store: Store, run_id: str, load: Callable[[], Run | None], cursor: RunCursor, settings: Settings,
    shutdown: Event, gone: Event, paced: dict[str, Pacing | None],
) -> Generator[bytes, None, str]:

    def read_log(job_id: str, after: int) -> LogRead | None:
        try:
            return store.read(job_key(job_id), Position("", after))
        except UnknownLog:  # forgotten: nothing more will come
            return None

    yield encode_retry(settings.retry_ms) + encode_comment("connected")
    quiet_since = time.monotonic()
    run: Run | None = None
    loaded_at = 0.0
    changed = Event()  # the store's, shared with the run's other streams here: only the store sets it
    stale = True  # whether to look at the record whatever ``changed`` says (nothing loaded yet, or a failed wait)
    while True:
        try:
            if stale or changed.is_set() or time.monotonic() - loaded_at >= RECHECK:
                # The event first, then the record: a save after this load sets the new event.
                changed = store.run_changed(run_id)
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
        _sent(store, run, cursor, waiting, paced)
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
        # Woken by output, the record's next save, or in time for the next recheck or heartbeat.
        timeout = max(0.0, min(loaded_at + RECHECK, quiet_since + settings.heartbeat_interval) - time.monotonic())
        try:
            if afters:
                store.wait_any(afters, timeout, (changed, shutdown, gone))
            else:
                gevent.wait([changed, shutdown, gone], timeout=timeout, count=1)
        except (UnknownLog, StoreUnavailable):
            gevent.sleep(RETRY)
            stale = True
        if time.monotonic() - quiet_since >= settings.heartbeat_interval:
            yield HEARTBEAT
            quiet_since = time.monotonic()
