"""Flow control across workers: a job run by one worker waits for its viewers on others.

A viewer on another worker reads the job's stream in Redis, which the owner
trims at ``job_buffer_bytes``. Unpaced, a flood outruns it (the owner's pump
reads the pipe as fast as the command writes; the viewer waits for Redis, its
worker's reader and its own socket) and it gets a ``gap``: output lost on a
hop between workers, not at a slow client. So each viewer's worker publishes,
per job, how far its slowest stream on that job has sent (``ViewerPublisher``:
one hash per job, a field per worker, every few milliseconds while they move),
and the owner keeps no more than a window of output ahead of the slowest
(``ViewerPositions``), as ``GET /run`` does for its owning viewer:

- the owner learns the positions with each flush of the job's output (one
  ``HGETALL`` in the flush's ``MULTI``), and by polling while it waits;
- it neither waits for nor trims past a position that has not moved for
  ``VIEWER_STALL`` seconds (a viewer stuck on its socket, or a worker gone),
  so no viewer can hold a job for longer than that without reading;
- a run's job waits from its start for its run's stream, which learns of the
  job only once it has started (``expect``): as for a viewer at offset 0,
  until the first position comes, or for VIEWER_STALL seconds;
- the hash expires ``TTL`` seconds after its last write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

from ..base import VIEWER_STALL, Pacing

log = logging.getLogger(__name__)

PUBLISH_INTERVAL = 0.002  # seconds: a viewer worker writes its positions at most this often
POLL = 0.002  # seconds between looks at the positions while the owner waits for them
TTL = 60  # seconds: the hash of a job nobody reads any more goes


_EXPECTED = b""  # no worker's field: the viewer a run's job waits for before it has come


def pace_key(prefix: str, job_id: str) -> str:
    """The hash of a job's viewer positions: worker -> the offset its slowest stream has sent through."""
    return f"{prefix}pace:{job_id}"


class ViewerPositions:
    """What the owner knows of one job's viewers elsewhere: their positions, and when each last moved."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[bytes, tuple[int, float]] = {}  # field -> (offset, when it last changed)

    def expect(self, now: float | None = None) -> None:
        """A viewer is expected (a run's stream): as one at offset 0, until a position comes (see the module)."""
        self._seen[_EXPECTED] = (0, time.monotonic() if now is None else now)

    def came(self) -> None:
        """The expected viewer has come (a run's stream in the owner's own worker)."""
        self._seen.pop(_EXPECTED, None)

    def update(self, fields: dict, now: float | None = None) -> None:
        """Take a fresh ``HGETALL`` of the job's hash (fields gone are viewers gone)."""
        now = time.monotonic() if now is None else now
        seen = self._seen
        if not fields and _EXPECTED in seen:
            return  # still expected
        fresh: dict[bytes, tuple[int, float]] = {}
        for name, value in fields.items():
            try:
                offset = int(value)
            except ValueError:
                continue
            before = seen.get(name)
            fresh[name] = before if before is not None and before[0] == offset else (offset, now)
        self._seen = fresh

    def slowest(self, now: float | None = None) -> int | None:
        """The offset of the slowest viewer that has moved within VIEWER_STALL seconds; None if there is none."""
        if not self._seen:
            return None
        now = time.monotonic() if now is None else now
        offsets = [offset for offset, moved in self._seen.values() if now - moved <= VIEWER_STALL]
        return min(offsets) if offsets else None


class RemoteHold(Pacing):
    """A stream on this worker that reads a job run by another: its position, published by ``ViewerPublisher``."""

    __slots__ = ("key", "offset", "publisher")

    def __init__(self, publisher: ViewerPublisher, key: str, offset: int) -> None:
        self.publisher = publisher
        self.key = key
        self.offset = offset

    def read_through(self, offset: int) -> None:
        """The stream has sent everything through ``offset``."""
        if offset > self.offset:
            self.offset = offset
            self.publisher.moved(self.key)

    def close(self) -> None:
        """The stream has ended."""
        self.publisher.release(self)


class ViewerPublisher:
    """This worker's streams on other workers' jobs, and the greenlet that writes their positions to Redis."""

    def __init__(self, client, field: str, hash_of: Callable[[str], str]) -> None:
        self.client = client  # the store's pool
        self.field = field  # this worker: host:pid
        self.hash_of = hash_of  # log key -> the job's hash of positions
        self._holds: dict[str, list[RemoteHold]] = {}
        self._dirty: set[str] = set()
        self._woken = Event()
        self._greenlet: gevent.Greenlet | None = None

    def hold(self, key: str, after: int) -> RemoteHold:
        """A new stream on ``key`` that has sent through ``after``."""
        hold = RemoteHold(self, key, after)
        self._holds.setdefault(key, []).append(hold)
        self.moved(key)
        return hold

    def release(self, hold: RemoteHold) -> None:
        """``hold``'s stream has ended."""
        holds = self._holds.get(hold.key)
        if holds is not None and hold in holds:
            holds.remove(hold)
            if not holds:
                del self._holds[hold.key]
            self.moved(hold.key)

    def moved(self, key: str) -> None:
        """A stream on ``key`` has sent more (or come, or gone): publish soon."""
        self._dirty.add(key)
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        self._woken.set()

    def _run(self) -> None:
        while True:
            self._woken.wait()
            self._woken.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                self._publish(dirty)
            except Exception as exc:  # Redis away: the owner stops waiting for positions that no longer move
                log.debug("cannot publish viewer positions: %s", exc)
            gevent.sleep(PUBLISH_INTERVAL)

    def _publish(self, keys: set[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            name = self.hash_of(key)
            holds = self._holds.get(key)
            if holds:
                pipe.hset(name, self.field, min(hold.offset for hold in holds))
                pipe.expire(name, TTL)
            else:
                pipe.hdel(name, self.field)
        pipe.execute()
