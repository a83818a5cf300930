"""Scratch cgroups for in-process tests: made under this machine's writable cgroup2 mount, removed afterwards.

Freezing one (``cgroup.freeze``) stops a child the moment it joins, before its
exec: a spawn that hangs, on demand, without a hanging file system.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

from app.process import cgroups

_names = itertools.count()


def writable_root() -> str | None:
    """A cgroup2 directory this process may make cgroups in (it runs in that mount's root), or None."""
    try:
        mount = cgroups.cgroup2_mount(Path("/proc/self/mountinfo").read_text())
        own = cgroups.own_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None
    if mount is None or own != "/" or not os.access(mount, os.W_OK):
        return None
    if not os.path.exists(os.path.join(mount, "cgroup.procs")):
        return None
    return mount


def skip_reason() -> str | None:
    """Why cgroup tests cannot run here, or None."""
    if writable_root() is None:
        return "no writable cgroup2 mount whose root cgroup this process runs in"
    return None


@contextlib.contextmanager
def scratch_cgroup(frozen: bool = False) -> Iterator[Path]:
    """A new cgroup, optionally frozen; killed, thawed and removed afterwards."""
    root = writable_root()
    assert root is not None, skip_reason()
    path = Path(root) / f"ssecmd-test-{os.getpid()}-{next(_names)}"
    path.mkdir()
    try:
        if frozen:
            (path / "cgroup.freeze").write_text("1")
        yield path
    finally:
        cgroups.remove_tree(str(path), wait=5)
        with contextlib.suppress(OSError):
            (path / "cgroup.freeze").write_text("0")
        deadline = time.monotonic() + 5
        while path.exists() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                path.rmdir()
            time.sleep(0.05)


def members(path: Path) -> list[int]:
    """The pids in a cgroup."""
    return [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
