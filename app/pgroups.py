"""A record, on disk, of the process groups each worker has running.

A worker that dies by SIGKILL runs no cleanup. Its direct children get
PR_SET_PDEATHSIG, but grandchildren do not; so each worker writes one file
per running process group, and gunicorn's master (``child_exit`` hook)
kills whatever groups a dead worker left behind.

Standard library only: the master imports this, and must not import gevent
or Flask before the workers are forked and patched.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def default_run_dir() -> str:
    """Per-user directory for the registry when none is configured."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, f"sse-commander-{os.getuid()}")


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: distinguishes a reused pid from the original process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may contain spaces or parentheses; fields follow the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode()


class ProcessGroupRegistry:
    """One directory per worker pid holding one file per live process group."""

    def __init__(self, root: str, worker_pid: int) -> None:
        self.dir = Path(root) / str(worker_pid)

    def add(self, pgid: int) -> None:
        """Record a group whose leader (pid == pgid) has just started."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.dir / str(pgid)).write_text(_start_time(pgid) or "")

    def remove(self, pgid: int) -> None:
        """Forget a group once it is gone and its leader reaped."""
        with contextlib.suppress(FileNotFoundError):
            (self.dir / str(pgid)).unlink()


def kill_orphaned_groups(root: str, worker_pid: int) -> list[int]:
    """Kill every group recorded for a dead worker; returns the pgids signalled."""
    directory = Path(root) / str(worker_pid)
    killed: list[int] = []
    if not directory.is_dir():
        return killed
    for entry in directory.iterdir():
        try:
            pgid = int(entry.name)
            recorded = entry.read_text().strip()
        except (ValueError, OSError):
            continue
        current = _start_time(pgid)
        # A live process with this pid but another start time is not ours: the pid
        # was reused after our whole group died. A pid cannot be reused while any
        # process still belongs to a group of that id, so a missing leader with a
        # live group means the group is ours.
        if current is None or current == recorded:
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
            except (ProcessLookupError, PermissionError):
                pass
        with contextlib.suppress(OSError):
            entry.unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()
    return killed
