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
    # Plain system calls: this runs for every job started, and file objects cost more than the read.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat:
        return None
    # The command name may contain spaces or parentheses; fields follow the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode()


class ProcessGroupRegistry:
    """One directory per worker pid holding one file per live process group."""

    def __init__(self, root: str, worker_pid: int) -> None:
        self.dir = Path(root) / str(worker_pid)
        self._prefix = f"{self.dir}/"

    def add(self, pgid: int) -> None:
        """Record a group whose leader (pid == pgid) has just started."""
        path = self._prefix + str(pgid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:  # the first group of this worker (or the directory was removed)
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, flags, 0o600)
        try:
            os.write(fd, (_start_time(pgid) or "").encode())
        finally:
            os.close(fd)

    def remove(self, pgid: int) -> None:
        """Forget a group once it is gone and its leader reaped."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._prefix + str(pgid))


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
