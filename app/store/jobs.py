"""The Job record: a job's metadata, as every store keeps it and ``GET /jobs/<id>`` shows it. Pure."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..policy.commandline import display_command
from ..states import LIVE_STATES, JobState


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass
class Job:
    """A job's metadata, as shown by GET /jobs/<id>."""

    id: str
    argv: tuple[str, ...]
    timeout: float
    origin: str  # "run" (lives with its request) or "jobs" (detached)
    owner: str = "anonymous"
    action: str | None = None
    params: dict[str, Any] | None = None
    stderr: str = "separate"  # "merged": one pipe for stdout and stderr, every event is stdout (exact order)
    stdin: bool = False  # its stdin is a pipe that POST /jobs/<id>/input writes to (else /dev/null)
    created_at: float = field(default_factory=time.time)
    state: JobState = JobState.RUNNING
    pid: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    signal_name: str | None = None
    reason: str | None = None
    cancelled_by: str | None = None  # who cancelled it (reason "cancelled"), when auth is on
    error: str | None = None
    output_bytes: int = 0
    dropped_bytes: int = 0
    cpu_seconds: float | None = None  # CPU time of all its processes, where measurable
    peak_memory_bytes: int | None = None  # peak memory of all its processes, where measurable
    request_id: str | None = None  # the X-Request-ID of the request that started it
    damaged: bool = False  # history on disk: part of its record or output could not be read back

    @property
    def finished(self) -> bool:
        """True once the job has ended, however it ended."""
        return self.state not in LIVE_STATES

    def duration(self, now: float | None = None) -> float | None:
        """Seconds from start to end (or to now while running)."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else (now or time.time())
        return round(end - self.started_at, 6)

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape of a job."""
        return {
            "id": self.id,
            "argv": list(self.argv),
            "command": display_command(self.argv),
            "action": self.action,
            "params": self.params,
            "stderr": self.stderr,
            "stdin": self.stdin,
            "owner": self.owner,
            "state": self.state.value,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "signal_name": self.signal_name,
            "reason": self.reason,
            "cancelled_by": self.cancelled_by,
            "error": self.error,
            "timeout": self.timeout,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "duration": self.duration(),
            "output_bytes": self.output_bytes,
            "dropped_bytes": self.dropped_bytes,
            "cpu_seconds": self.cpu_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "request_id": self.request_id,
            "damaged": self.damaged,
            "urls": {
                "self": f"/jobs/{self.id}",
                "events": f"/jobs/{self.id}/events",
                "output": f"/jobs/{self.id}/output",
            },
        }
