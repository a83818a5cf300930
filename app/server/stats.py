"""What this worker says about itself on the ``stats`` channel: jobs, streams, load and memory."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import gevent

log = logging.getLogger(__name__)


def _memory() -> dict[str, int]:
    info: dict[str, int] = {}
    try:
        with open(f"/proc/{os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    info["worker_rss_bytes"] = int(line.split()[1]) * 1024
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, value = line.split(":", 1)
                if key in ("MemTotal", "MemAvailable"):
                    info[f"{key[3:].lower()}_bytes"] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return info


def stats_snapshot(running_jobs: int, open_streams: int) -> dict[str, Any]:
    """What the ``stats`` channel carries."""
    return {
        "worker_pid": os.getpid(),
        "running_jobs": running_jobs,
        "open_streams": open_streams,
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "memory": _memory(),
    }


def run_stats_publisher(
    interval: float, listening: Callable[[], bool], publish: Callable[[dict[str, Any]], object],
    snapshot: Callable[[], dict[str, Any]],
) -> gevent.Greenlet:
    """Every ``interval`` seconds while anyone is ``listening``, ``publish`` a ``snapshot``."""

    def loop() -> None:
        while True:
            started = time.monotonic()
            if listening():
                try:
                    publish(snapshot())
                except Exception:
                    log.exception("stats publisher failed")
            gevent.sleep(max(0.0, interval - (time.monotonic() - started)))

    return gevent.spawn(loop)
