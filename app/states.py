"""THE table of job states and of the reasons jobs end: one module, one README table. Pure.

A job is ``running`` (or ``stopping``, once told to end) until it reaches one
final state, once. ``exit.reason`` (and ``GET /jobs/<id>``'s ``reason``) says
why it ended; each reason leads to exactly one final state, and
``STATE_FOR_REASON`` is that mapping. The README's table ("Job states and exit
reasons") is ``readme_table()``, word for word (tests/test_states.py checks it).

Later stores add states here, nowhere else: history on disk adds
``interrupted`` (the server stopped while the job ran), Redis adds ``lost``
(the host running it went away).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    RUNNING = "running"
    STOPPING = "stopping"  # told to end: signalled, not all gone yet
    EXITED = "exited"
    KILLED = "killed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    FAILED_TO_START = "failed_to_start"
    UNKILLABLE = "unkillable"  # still not gone kill_grace + 5 s after it was told to end: given up on
    INTERRUPTED = "interrupted"  # history on disk (issue 17): the server stopped while it ran (a crash, kill -9)
    LOST = "lost"  # the worker or host running it went away (a shared store; issue 16)


class ExitReason(enum.StrEnum):
    """Why a job that started ended: the ``reason`` of its ``exit`` event."""

    EXITED = "exited"
    KILLED = "killed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    DISCONNECTED = "disconnected"
    SHUTDOWN = "shutdown"
    OUTPUT_LIMIT = "output_limit"
    UNKILLABLE = "unkillable"
    INTERRUPTED = "interrupted"
    LOST = "lost"


class StartFailure(enum.StrEnum):
    """Why a job's command could not start: the ``reason`` of its ``err`` event."""

    NOT_FOUND = "not_found"
    NOT_EXECUTABLE = "not_executable"
    SPAWN_FAILED = "spawn_failed"


LIVE_STATES = frozenset({JobState.RUNNING, JobState.STOPPING})
FINAL_STATES = frozenset(JobState) - LIVE_STATES


@dataclass(frozen=True)
class ReasonInfo:
    """One way a job ends: the reason, the final state it leads to, and what it means."""

    reason: str
    state: JobState
    meaning: str


REASONS: tuple[ReasonInfo, ...] = (
    ReasonInfo(ExitReason.EXITED, JobState.EXITED, "its command exited by itself (`code` says how)"),
    ReasonInfo(ExitReason.KILLED, JobState.KILLED, "a signal nobody here sent ended it (`signal` says which)"),
    ReasonInfo(ExitReason.OUTPUT_LIMIT, JobState.KILLED, "it wrote more than `max_output_bytes`"),
    ReasonInfo(ExitReason.TIMEOUT, JobState.TIMED_OUT, "its timeout ran out"),
    ReasonInfo(ExitReason.CANCELLED, JobState.CANCELLED, "someone cancelled it (`DELETE /jobs/<id>`)"),
    ReasonInfo(ExitReason.DISCONNECTED, JobState.CANCELLED, "the client of its `GET /run` left"),
    ReasonInfo(ExitReason.SHUTDOWN, JobState.CANCELLED, "the server stopped or restarted"),
    ReasonInfo(
        ExitReason.UNKILLABLE, JobState.UNKILLABLE,
        "it was still not over `kill_grace` + 5 s after it was told to end (see Processes)",
    ),
    ReasonInfo(
        ExitReason.INTERRUPTED, JobState.INTERRUPTED,
        "the server died while it ran (a crash, `kill -9`); found at the next start-up (history on disk)",
    ),
    ReasonInfo(
        ExitReason.LOST, JobState.LOST,
        "the worker or host running it went away (with `store_url`: see Scaling out)",
    ),
    ReasonInfo(StartFailure.NOT_FOUND, JobState.FAILED_TO_START, "its program does not exist (an `err` event)"),
    ReasonInfo(StartFailure.NOT_EXECUTABLE, JobState.FAILED_TO_START, "its program cannot be executed"),
    ReasonInfo(StartFailure.SPAWN_FAILED, JobState.FAILED_TO_START, "it could not be set up (user, limits, cgroup)"),
)

STATE_FOR_REASON: dict[str, JobState] = {info.reason: info.state for info in REASONS}

STATE_MEANINGS: dict[JobState, str] = {
    JobState.RUNNING: "started (or starting); its events stream live",
    JobState.STOPPING: "told to end; not all of it is gone yet",
    JobState.EXITED: "its command ended by itself",
    JobState.KILLED: "a signal ended it",
    JobState.TIMED_OUT: "stopped at its timeout",
    JobState.CANCELLED: "stopped on request, or because its viewer or the server went away",
    JobState.FAILED_TO_START: "its command never started",
    JobState.UNKILLABLE: "given up on: its slot is free, and what is left is reaped when it dies",
    JobState.INTERRUPTED: "cut short by a crash of the server; its output up to then is kept",
    JobState.LOST: "its worker or host died while it ran: its last output is kept, how it ended is unknown",
}


def readme_table() -> str:
    """The README's table of states and reasons, generated from this module (one row per state)."""
    rows = ["| State | Final | `reason` (of its `exit` or `err` event) | Meaning |", "|---|---|---|---|"]
    for state in JobState:
        reasons = "<br>".join(f"`{info.reason}`: {info.meaning}" for info in REASONS if info.state is state)
        final = "yes" if state in FINAL_STATES else "no"
        rows.append(f"| `{state}` | {final} | {reasons} | {STATE_MEANINGS[state]} |")
    return "\n".join(rows) + "\n"
