"""One memory budget for every buffered event of a worker: jobs' output and channels' history.

Each log is bounded by itself (``job_buffer_bytes``, ``channel_history_bytes``),
but a worker keeps up to ``max_finished_jobs`` finished jobs and
``max_channels`` channels: hundreds of short, noisy jobs used to keep 16 MiB
each. Every log reports what it retains to one ``MemoryBudget`` as it
appends and trims (two additions on the append path, nothing scanned). When
the total passes ``max_buffered_bytes``, the budget takes memory back:

1. from finished jobs, oldest first, down to their start and final events;
2. then from running jobs (and channels), largest first, each down to no
   less than ``FLOOR_BYTES``, whose buffer stays that small from then on.

A viewer behind what was dropped gets the usual ``gap`` event. Reclaiming
frees a sixteenth of the budget more than needed, so it runs once per that
much output, not once per append; when nothing is left to take (every log at
its floor), it waits for another such slice before trying again.

Pure bookkeeping: no I/O, no greenlets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .eventlog import EventLog

FLOOR_BYTES = 1 << 20  # a running job's or a channel's buffer is never shrunk below this


class MemoryBudget:
    """The bytes held by every attached log, and the policy that takes them back beyond ``limit``."""

    def __init__(self, limit: int, floor: int = FLOOR_BYTES) -> None:
        self.limit = limit
        self.floor = floor
        self.used = 0  # kept by the logs themselves (EventLog.append, _trim)
        self.threshold = limit  # reclaim once ``used`` passes this
        self.reclaimed = 0  # bytes taken back so far
        self._slack = max(limit // 16, 1)
        self._live: dict[EventLog, None] = {}  # running jobs and channels
        self._finished: dict[EventLog, None] = {}  # finished jobs that still hold output, oldest first

    def attach(self, log: EventLog) -> None:
        """Count a log (a new job or channel, or a channel brought back)."""
        self._live[log] = None
        self.used += log.retained_bytes

    def finished(self, log: EventLog) -> None:
        """A job's log has its final event: from now on it is the first to give memory back."""
        if log in self._live:
            del self._live[log]
            self._finished[log] = None

    def detach(self, log: EventLog) -> None:
        """Stop counting a log (a forgotten job, a forgotten channel)."""
        self._live.pop(log, None)
        self._finished.pop(log, None)
        self.used -= log.retained_bytes
        if self.used <= self.limit:
            self.threshold = self.limit

    def reclaim(self) -> None:
        """Bring ``used`` back under the budget: finished jobs first, then the largest live logs."""
        target = self.limit - self._slack
        before = self.used
        finished = self._finished
        for log in list(finished):
            if self.used <= target:
                break
            log.shrink_to(max(0, log.retained_bytes - (self.used - target)))
            if not log.can_shrink:
                del finished[log]  # down to its start and final events: nothing more to take
        if self.used > target:
            self._shrink_largest(target)
        self.reclaimed += before - self.used
        # Over the budget with nothing left to take: try again only after another slice of output.
        self.threshold = self.limit if self.used <= self.limit else self.used + self._slack

    def _shrink_largest(self, target: int) -> None:
        """Lower the largest live logs to one common cap (not below the floor) that frees enough."""
        floor = self.floor
        sizes = sorted(
            ((log.retained_bytes, log) for log in self._live if log.retained_bytes > floor),
            key=lambda pair: pair[0],
            reverse=True,
        )
        if not sizes:
            return
        cap = water_level([size for size, _ in sizes], self.used - target, floor)
        for size, log in sizes:
            if size <= cap:
                break
            log.shrink_to(cap)


def water_level(sizes: list[int], excess: int, floor: int) -> int:
    """The highest cap >= ``floor`` such that cutting every size above it frees ``excess`` (``sizes`` descending).

    If cutting everything down to ``floor`` frees less, ``floor``.
    """
    total = 0
    for count, size in enumerate(sizes, start=1):
        total += size
        below = sizes[count] if count < len(sizes) else 0
        level = max(below, floor)
        if total - count * level >= excess:
            return max(floor, (total - excess) // count)
    return floor
