"""A run's state: one job per target host, the rolling ``parallel`` window, ``stop_on_failure``, the aggregate.

Pure code: the coordinator (coordinator.py) feeds it what happened and asks it what to start next; the
record it keeps in the store is ``Run.to_record``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

PENDING, RUNNING = "pending", "running"
SUCCEEDED, FAILED, REFUSED, UNREACHABLE, LOST, CANCELLED, SKIPPED = (
    "succeeded", "failed", "refused", "unreachable", "lost", "cancelled", "skipped")
HOST_STATES = (PENDING, RUNNING, SUCCEEDED, FAILED, REFUSED, UNREACHABLE, LOST, CANCELLED, SKIPPED)
FINAL_HOST_STATES = frozenset(HOST_STATES[2:])  # also the outcomes /metrics counts
RUN_STATES = ("running", "succeeded", "failed", "partial", "cancelled")


@dataclass
class HostRun:
    """One target host's part of a run (an element of GET /runs/<id>'s ``hosts``)."""

    host: str
    job: str | None = None
    state: str = PENDING
    exit_code: int | None = None
    reason: str | None = None
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def final(self) -> bool:
        """Whether this host's part is over."""
        return self.state in FINAL_HOST_STATES

    def to_json(self) -> dict[str, Any]:
        """As the API shows it."""
        return asdict(self)

    def end(self, state: str, *, reason: str | None = None, exit_code: int | None = None,
            ended_at: float | None = None) -> None:
        """Move to a final state (once: a final state is never changed)."""
        if self.final:
            return
        self.state, self.reason, self.exit_code = state, reason, exit_code
        self.ended_at = ended_at if ended_at is not None else time.time()


def outcome_of_job(state: str, exit_code: int | None) -> str:
    """A host's final state from its finished job's state and exit code."""
    if state == "exited":
        return SUCCEEDED if exit_code == 0 else FAILED
    if state in ("lost", "interrupted"):  # its host or worker went away while it ran
        return LOST
    if state == "cancelled":
        return CANCELLED
    return FAILED  # killed, timed out, failed to start, unkillable


@dataclass
class Run:
    """A run: who started what where, and how each host is doing."""

    id: str
    user: str
    command: str  # for display
    hosts: list[HostRun]
    parallel: int | None = None  # at most this many hosts at a time; None: all at once
    stop_on_failure: bool = False
    request: dict[str, Any] = field(default_factory=dict)  # the job part of POST /runs, for each target host
    coordinator: str = ""  # the host whose worker runs the run
    coordinator_worker: int = 0  # that worker's pid: a run whose worker went away is adopted by another
    principal: dict[str, Any] = field(default_factory=dict)  # user, roles, via: whom the hosts start the jobs for
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    cancelled: bool = False

    @property
    def state(self) -> str:
        """The aggregate: running while any host is pending or running, then cancelled, succeeded, failed
        (none succeeded) or partial."""
        if any(not h.final for h in self.hosts):
            return "running"
        if self.cancelled:
            return "cancelled"
        good = sum(h.state == SUCCEEDED for h in self.hosts)
        if good == len(self.hosts):
            return "succeeded"
        return "partial" if good else "failed"

    @property
    def failed_hosts(self) -> list[str]:
        """Hosts whose final state is not ``succeeded``."""
        return [h.host for h in self.hosts if h.final and h.state != SUCCEEDED]

    def host(self, name: str) -> HostRun:
        """This run's part on host ``name``."""
        return next(h for h in self.hosts if h.host == name)

    def stopping(self) -> bool:
        """Whether no new host may start: cancelled, or a host failed under ``stop_on_failure``."""
        if self.cancelled:
            return True
        return self.stop_on_failure and any(h.final and h.state != SUCCEEDED for h in self.hosts)

    def to_start(self, starting: set[str], held: frozenset[str] | set[str] = frozenset()) -> list[HostRun]:
        """The pending hosts to start now, ``starting`` naming those whose start is under way: within the rolling
        window of ``parallel`` (running plus starting), in the order given; nothing once stopping. ``held``:
        pending hosts not to start now, outside the window (their host was busy; coordinator.py)."""
        if self.stopping():
            return []
        pending = [h for h in self.hosts if h.state == PENDING and h.host not in starting and h.host not in held]
        if self.parallel is None:
            return pending
        room = self.parallel - len(starting) - sum(h.state == RUNNING for h in self.hosts)
        return pending[:max(room, 0)]

    def skip_rest(self, starting: set[str]) -> bool:
        """Once stopping: every pending host not being started becomes ``skipped``; whether any did."""
        if not self.stopping():
            return False
        skipped = False
        why = "the run was cancelled" if self.cancelled else "stop_on_failure: another host failed"
        for h in self.hosts:
            if h.state == PENDING and h.host not in starting:
                h.end(SKIPPED, reason=why)
                skipped = True
        return skipped

    def to_json(self) -> dict[str, Any]:
        """GET /runs/<id>'s body."""
        return {
            "id": self.id, "state": self.state, "failed_hosts": self.failed_hosts, "user": self.user,
            "command": self.command, "created_at": self.created_at, "ended_at": self.ended_at,
            "parallel": self.parallel, "stop_on_failure": self.stop_on_failure,
            "hosts": [h.to_json() for h in self.hosts],
        }

    def to_record(self) -> dict[str, Any]:
        """What the store keeps: the public body plus what the coordinator needs."""
        return {**self.to_json(), "request": self.request, "coordinator": self.coordinator,
                "coordinator_worker": self.coordinator_worker, "principal": self.principal,
                "cancelled": self.cancelled}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Run:
        """Back from ``to_record``."""
        return cls(
            id=record["id"], user=record["user"], command=record["command"],
            hosts=[HostRun(**h) for h in record["hosts"]], parallel=record["parallel"],
            stop_on_failure=record["stop_on_failure"], request=record.get("request", {}),
            coordinator=record.get("coordinator", ""), coordinator_worker=record.get("coordinator_worker", 0),
            principal=record.get("principal", {}), created_at=record["created_at"],
            ended_at=record["ended_at"], cancelled=record.get("cancelled", False),
        )
