"""A record, on disk, of the process groups each worker has running.

A worker that dies by SIGKILL runs no cleanup. Its direct children get
PR_SET_PDEATHSIG, but grandchildren do not; so each worker writes one file
per running process group, and gunicorn's master (``child_exit`` hook)
kills whatever groups a dead worker left behind.

Only this server can write there: the master creates ``run_dir`` 0700 and
refuses one that another user owns or can write to (app/policy/filesafety.py), and
ignores any record this server did not write, so that nobody can have the
root master kill a process group of their choosing.

Standard library only: the master imports this, and must not import gevent
or Flask before the workers are forked and patched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Callable
from pathlib import Path

from ..policy.filesafety import ensure_private_dir, foreign_record, node, private_dir_problem, server_user


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
        self.root = root
        self.dir = Path(root) / str(worker_pid)
        self._prefix = f"{self.dir}/"

    def add(self, pgid: int) -> None:
        """Record a group whose leader (pid == pgid) has just started."""
        path = self._prefix + str(pgid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:  # the first group of this worker (or the directory was removed)
            ensure_private_dir(self.root)
            ensure_private_dir(str(self.dir))
            fd = os.open(path, flags, 0o600)
        try:
            os.write(fd, (_start_time(pgid) or "").encode())
        finally:
            os.close(fd)

    def remove(self, pgid: int) -> None:
        """Forget a group once it is gone and its leader reaped."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._prefix + str(pgid))


def _unsafe_dir(path: str) -> str | None:
    """Why records under ``path`` must not be acted on, or None."""
    try:
        return private_dir_problem(node(path, follow=False), os.geteuid(), server_user())
    except OSError as exc:
        return f"{path}: {exc.strerror}"


def _read_record(entry: Path) -> bytes:
    fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return os.read(fd, 64)
    finally:
        os.close(fd)


def kill_orphaned_groups(root: str, worker_pid: int, warn: Callable[[str], object] | None = None) -> list[int]:
    """Kill every group recorded for a dead worker by this server; returns the pgids signalled.

    Records this server did not write, or in a directory others could write
    to, are left alone, and ``warn`` is told about them.
    """
    warn = warn or (lambda message: None)
    directory = Path(root) / str(worker_pid)
    killed: list[int] = []
    if not os.path.lexists(directory):
        return killed  # the worker had nothing running
    for path in (root, str(directory)):
        problem = _unsafe_dir(path)
        if problem is not None:
            warn(f"process-group records of worker {worker_pid} ignored: {problem}")
            return killed
    own_group = os.getpgrp()
    for entry in directory.iterdir():
        try:
            pgid = int(entry.name)
            record = node(str(entry), follow=False)
            content = _read_record(entry) if stat.S_ISREG(record.mode) else b""
        except (ValueError, OSError):
            continue
        foreign = foreign_record(record, content, os.geteuid())
        if foreign is not None or pgid <= 1 or pgid == own_group:
            warn(f"ignored process-group record {entry}: {foreign or 'names no job of this server'}")
            continue
        recorded = content.decode()
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
