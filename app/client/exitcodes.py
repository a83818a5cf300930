"""How a job's end becomes the client's exit status, as a shell would report a local command. Pure code.

The job's own status passes through: its exit code, or 128 + N when signal N
killed it. A command that could not start gives 127 (not found) or 126 (not
executable), like bash. Endings that have no status of their own get a
documented code, and the client's own failures give 255, like ssh. Every
other ending (killed, cancelled, disconnected, shutdown) passes the process's
status through, with a line on stderr that says who ended it.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_SIGNAL_BASE = 128
EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_OUTPUT_LIMIT = 123
EXIT_UNKILLABLE = 122
EXIT_INTERRUPTED = 121
EXIT_LOST = 120
EXIT_UNKNOWN_END = 125  # an ending this client does not know, without a status of its own
EXIT_DETACHED = 130  # Ctrl-C that leaves the job running, as a shell reports Ctrl-C
EXIT_CLIENT_ERROR = 255  # as ssh: the client failed, or the server refused the request

# Endings whose code says why the job ended, whatever status its process left.
REASON_CODES: dict[str, int] = {
    "timeout": EXIT_TIMEOUT,
    "output_limit": EXIT_OUTPUT_LIMIT,
    "unkillable": EXIT_UNKILLABLE,
    "interrupted": EXIT_INTERRUPTED,
    "lost": EXIT_LOST,
}
# Start failures (the ``err`` event's reason).
START_FAILURE_CODES: dict[str, int] = {
    "not_found": EXIT_NOT_FOUND,
    "not_executable": EXIT_NOT_EXECUTABLE,
    "spawn_failed": EXIT_NOT_EXECUTABLE,
}
# A job's state, when its record names no reason.
_STATE_REASONS = {"timed_out": "timeout"}

_WHY = {
    "killed": "was killed by a signal nobody here sent",
    "cancelled": "was cancelled",
    "disconnected": "was stopped: its /run client went away",
    "shutdown": "was stopped by a server restart",
    "timeout": "timed out",
    "output_limit": "was stopped: it reached the output limit",
    "unkillable": "could not be killed; the server gave up on its processes",
    "interrupted": "was interrupted: the server stopped while it ran",
    "lost": "was lost: the host running it went away",
    "not_found": "could not start: command not found",
    "not_executable": "could not start: not executable",
    "spawn_failed": "could not start",
}


@dataclass(frozen=True)
class Outcome:
    """The exit status for a finished job, and the line that explains it on stderr (None: nothing to explain)."""

    code: int
    reason: str
    message: str | None
    summary: str  # one line for -v and for ``cancel``: what happened, always


def signal_label(number: int | None, name: str | None = None) -> str:
    """SIGTERM for 15; the number when Python does not know the signal."""
    if name:
        return name
    try:
        return signal.Signals(number).name
    except (TypeError, ValueError):
        return f"signal {number}"


def _status(code: int | None, sig: int | None, name: str | None) -> tuple[int | None, str]:
    if sig:
        return EXIT_SIGNAL_BASE + sig, f"killed by {signal_label(sig, name)}"
    if code is not None:
        return code & 0xFF, f"exit code {code}"
    return None, "no exit status"


def outcome_of_exit(data: dict[str, Any], job_id: str = "") -> Outcome:
    """The outcome of an ``exit`` event's data: reason, code, signal, signal_name, duration, cancelled_by."""
    reason = str(data.get("reason") or "exited")
    status, described = _status(data.get("code"), data.get("signal"), data.get("signal_name"))
    duration = data.get("duration")
    after = f" after {duration:.2f} s" if isinstance(duration, (int, float)) else ""
    subject = f"job {job_id}" if job_id else "the job"
    if reason in REASON_CODES:
        code = REASON_CODES[reason]
    elif status is not None:
        code = status
    else:
        code = EXIT_UNKNOWN_END
    if reason == "exited":
        summary = f"{subject} exited with code {data.get('code')}{after}"
        return Outcome(code, reason, None, summary)
    why = _WHY.get(reason, f"ended ({reason})")
    if reason == "cancelled" and data.get("cancelled_by"):
        why = f"was cancelled by {data['cancelled_by']}"
    summary = f"{subject} {why} ({described}){after}"
    return Outcome(code, reason, summary, summary)


def outcome_of_start_failure(data: dict[str, Any], job_id: str = "") -> Outcome:
    """The outcome of an ``err`` event's data: the command could not start."""
    reason = str(data.get("reason") or "spawn_failed")
    code = START_FAILURE_CODES.get(reason, EXIT_NOT_EXECUTABLE)
    subject = f"job {job_id}" if job_id else "the job"
    detail = data.get("out") or data.get("error") or ""
    message = f"{subject} {_WHY.get(reason, 'could not start')}" + (f": {detail}" if detail else "")
    return Outcome(code, reason, message, message)


def outcome_of_job(job: dict[str, Any]) -> Outcome | None:
    """The outcome of a job as GET /jobs/<id> shows it; None while it runs (or stops)."""
    state = job.get("state")
    if state in ("running", "stopping", None):
        return None
    job_id = str(job.get("id") or "")
    if state == "failed_to_start":
        return outcome_of_start_failure({"reason": job.get("reason"), "out": job.get("error")}, job_id)
    return outcome_of_exit(
        {
            "reason": job.get("reason") or _STATE_REASONS.get(state, state),
            "code": job.get("exit_code"),
            "signal": job.get("signal"),
            "signal_name": job.get("signal_name"),
            "duration": job.get("duration"),
            "cancelled_by": job.get("cancelled_by"),
        },
        job_id,
    )
