"""Writing for people: the job's output byte for byte, the client's notes on stderr, tables. Formatting is pure."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO

PROG = "sse-commander"
RED = b"\x1b[31m"
RESET = b"\x1b[0m"


def colour_wanted(stdout_tty: bool, stderr_tty: bool, environ: Mapping[str, str]) -> bool:
    """Red stderr when both streams show on a terminal and NO_COLOR is unset or empty (no-color.org)."""
    return stdout_tty and stderr_tty and not environ.get("NO_COLOR")


def encode_text(text: str) -> bytes:
    """An event's text as the bytes to write (UTF-8; the server already made invalid bytes U+FFFD)."""
    return text.encode("utf-8", "replace")


class Terminal:
    """Where the client writes: the job's stdout and stderr as the events carry them, and its own notes."""

    def __init__(
        self, stdout: BinaryIO, stderr: BinaryIO, *, colour: bool = False, verbose: bool = False,
        stdout_tty: bool = False, stderr_tty: bool = False,
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.colour = colour
        self.verbose = verbose
        self._ttys = {"stdout": stdout_tty, "stderr": stderr_tty}
        self._mid_line = {"stdout": False, "stderr": False}

    @classmethod
    def standard(cls, *, verbose: bool = False, environ: Mapping[str, str] | None = None) -> Terminal:
        """The process's own stdout and stderr."""
        stdout_tty, stderr_tty = sys.stdout.isatty(), sys.stderr.isatty()
        return cls(
            sys.stdout.buffer, sys.stderr.buffer,
            colour=colour_wanted(stdout_tty, stderr_tty, os.environ if environ is None else environ),
            verbose=verbose, stdout_tty=stdout_tty, stderr_tty=stderr_tty,
        )

    def output(self, stream: str, text: str) -> None:
        """Write a ``stdout`` or ``stderr`` event's text to the same local stream, at once."""
        data = encode_text(text)
        if not data:
            return
        target = self.stderr if stream == "stderr" else self.stdout
        target.write(RED + data + RESET if stream == "stderr" and self.colour else data)
        target.flush()
        self._mid_line[stream if stream == "stderr" else "stdout"] = not data.endswith((b"\n", b"\r"))

    def lines(self, stream: str, data: bytes) -> None:
        """Write whole lines (already formatted, each ending in a newline) to stdout or stderr, at once."""
        if not data:
            return
        target = self.stderr if stream == "stderr" else self.stdout
        target.write(data)
        target.flush()
        self._mid_line[stream if stream == "stderr" else "stdout"] = False

    def report(self, text: str) -> None:
        """A line of the client's own on stderr without the program's name: a summary table beside the output."""
        self.stderr.write(encode_text(text + "\n"))
        self.stderr.flush()

    def raw(self, data: bytes) -> None:
        """Write bytes to stdout untouched (``logs``)."""
        self.stdout.write(data)
        self.stdout.flush()

    def line(self, text: str) -> None:
        """A line of the client's own answer on stdout (tables, ids)."""
        self.stdout.write(encode_text(text + "\n"))
        self.stdout.flush()

    def note(self, message: str) -> None:
        """A line from the client on stderr, on a line of its own even after output that ended mid-line."""
        shared = [name for name, tty in self._ttys.items() if tty]
        start = b"\n" if self._ttys["stderr"] and any(self._mid_line[name] for name in shared) else b""
        self.stderr.write(start + encode_text(f"{PROG}: {message}\n"))
        self.stderr.flush()
        self._mid_line = {"stdout": False, "stderr": False} if start else self._mid_line

    def status(self, message: str) -> None:
        """A note shown only with -v."""
        if self.verbose:
            self.note(message)


def format_duration(seconds: float | None) -> str:
    """2.3s, 4m05s, 1h02m: short enough for a table."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def format_time(iso: str | None) -> str:
    """An ISO timestamp from the server in local time, to the second."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime(TIME_FORMAT)
    except ValueError:
        return iso


def format_unix_time(seconds: Any) -> str:
    """Unix seconds from the server (a run's ``created_at``) in local time, to the second, as ``format_time``."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return ""
    try:
        return datetime.fromtimestamp(seconds).astimezone().strftime(TIME_FORMAT)
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _exit_column(job: Mapping[str, Any]) -> str:
    if job.get("state") == "failed_to_start":
        return str(job.get("reason") or "failed")
    if job.get("signal"):
        return str(job.get("signal_name") or f"signal {job['signal']}")
    code = job.get("exit_code")
    return "" if code is None else str(code)


def _command_column(job: Mapping[str, Any]) -> str:
    if job.get("action"):
        params = " ".join(f"{key}={value}" for key, value in (job.get("params") or {}).items())
        return f"action {job['action']}" + (f" {params}" if params else "")
    return str(job.get("command") or " ".join(job.get("argv") or ()))


JOB_COLUMNS = ("ID", "STATE", "EXIT", "USER", "STARTED", "DURATION", "COMMAND")


def format_jobs(jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``jobs`` table, one line per job in the order given (the server's: newest first)."""
    rows = [JOB_COLUMNS] + [
        (
            str(job.get("id", "")),
            str(job.get("state", "")),
            _exit_column(job),
            str(job.get("owner") or ""),
            format_time(job.get("started_at") or job.get("created_at")),
            format_duration(job.get("duration")),
            _command_column(job),
        )
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(JOB_COLUMNS) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
            for row in rows]


def _parameter(param: Mapping[str, Any]) -> str:
    kind = param.get("type")
    if kind == "choice":
        text = "one of " + ", ".join(param.get("choices") or ())
    elif kind == "integer":
        low, high = param.get("min"), param.get("max")
        text = "integer" + (f" {'' if low is None else low}..{'' if high is None else high}"
                            if low is not None or high is not None else "")
    else:
        text = "text" + (f" matching {param['pattern']}" if param.get("pattern") else "")
    if "default" in param:
        text += f" (default {param['default']})"
    elif param.get("required"):
        text += " (required)"
    if param.get("description"):
        text += f": {param['description']}"
    return f"{param.get('name')}={text}"


def format_actions(body: Mapping[str, Any]) -> list[str]:
    """The ``actions`` listing: each action with its parameters, then the commands the caller may type."""
    lines = []
    for action in body.get("actions") or ():
        lines.append(f"{action.get('name')}" + (f"  {action['description']}" if action.get("description") else "")
                     + ("  (asks first: run --yes)" if action.get("confirm") else ""))
        lines.extend(f"    {_parameter(param)}" for param in action.get("params") or ())
    commands = body.get("commands") or ()
    if commands:
        if lines:
            lines.append("")
        lines.append("commands: " + " ".join(commands))
    return lines


def format_message(event: str, payload: Any, *, as_json: bool, message_id: str | None) -> str:
    """A channel message as ``tail`` prints it: what was published (text as is, anything else as JSON),
    or with ``as_json`` one JSON object per line with its id, event, data, user and time."""
    body = payload if isinstance(payload, dict) else {"data": payload}
    if as_json:
        return json.dumps({"id": message_id, "event": event, **body}, ensure_ascii=False)
    data = body.get("data")
    return data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
