"""How many connections and streams one worker can carry, from the settings and the open-files limit.

Every stream holds a connection (a socket) for its whole life, and gunicorn's
gevent worker stops accepting once ``worker_connections`` are open. So the
pool is sized as ``max_streams`` plus ``connection_headroom``: streams beyond
``max_streams`` are refused as busy, and the headroom stays free for short
requests (/healthz, POST /jobs, DELETE, publish). Each of those sockets is a
descriptor, and so is each running job's pipe: the plan checks that
RLIMIT_NOFILE carries them all, and shrinks both numbers in proportion when
it does not, so the service degrades into refusals rather than into failed
``accept()`` calls.

``plan_capacity`` is pure; ``raise_nofile_limit`` is the one call that
changes the process (the gunicorn master makes it, so workers inherit it).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from ..config import Settings

# Per running job, in the worker: its stdout and stderr pipes, plus, while it starts, the
# spawn's status pipe and a process-group registry file.
FDS_PER_JOB = 4
# The listening sockets, the event loop's own descriptors, log files, /proc reads.
RESERVED_FDS = 64

# The connection pool gunicorn runs this worker with (set by app.server.worker before the app loads);
# None outside gunicorn.
worker_pool: int | None = None


@dataclass(frozen=True)
class CapacityPlan:
    """What one worker serves under a given open-files limit."""

    max_streams: int  # streams held before refusing new ones as busy
    worker_connections: int  # gunicorn's pool: max_streams plus the headroom for short requests
    fds_needed: int  # descriptors the settings ask for
    nofile: int  # the soft RLIMIT_NOFILE the plan was made for

    @property
    def limited_by_nofile(self) -> bool:
        """True when the open-files limit is below what the settings ask for."""
        return self.nofile < self.fds_needed


def plan_capacity(settings: Settings, nofile: int, worker_connections: int | None = None) -> CapacityPlan:
    """The plan for one worker whose soft RLIMIT_NOFILE is ``nofile``.

    ``worker_connections``: the pool gunicorn actually runs with, when known
    (a ``--worker-connections`` on its command line wins over this plan).
    """
    job_fds = settings.max_running_jobs * FDS_PER_JOB + RESERVED_FDS
    wanted = settings.max_streams + settings.connection_headroom
    needed = wanted + job_fds
    # Too few descriptors or a smaller pool: share what there is between streams and headroom
    # in the configured proportion, keeping at least one connection for short requests.
    available = min(max(nofile - job_fds, 2), wanted)
    if worker_connections is not None:
        available = min(available, max(worker_connections, 2))
    if available >= wanted:
        return CapacityPlan(settings.max_streams, wanted, needed, nofile)
    streams = min(settings.max_streams, available * settings.max_streams // wanted, available - 1)
    return CapacityPlan(max(streams, 1), available, needed, nofile)


def raise_nofile_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit: (soft before, soft after, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # An unlimited hard limit still cannot go beyond the kernel's per-process maximum.
        target = _nr_open()
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    else:
        target = soft
    return soft, target, hard


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1 << 20


def current_nofile() -> int:
    """This process's soft RLIMIT_NOFILE (unlimited read as a very large number)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft
