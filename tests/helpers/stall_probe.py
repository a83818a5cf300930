"""stall_probe.py CONTROL_DIR: spawn a child that hangs before its exec, and report on it as JSON.

Run under in_private_mount.py (the hanging FUSE file system at CONTROL_DIR/mnt).
The child is given a working directory in the file system, which is made to
hang first ("pending": a SIGKILL still ends the wait); while it waits in its
chdir, this reports:

- ``hub_ran``: whether this process's event loop ran meanwhile (a watchdog
  thread kills the child after 10 s if not, so the probe ends either way);
- ``sigblk``: the child's blocked signals (/proc/<pid>/status);
- ``parent_in_clone``: whether a thread of this process is inside clone (the
  vfork wait: the child runs only while the thread that cloned it sleeps);
- ``stack_guard``: whether the mapping below the child's stack pointer is an
  inaccessible guard page.

Only app.process.spawn's ``spawn`` is used, so that the same probe runs against older spawners.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import gevent  # noqa: E402

from app.process.spawn import environment_block, spawn  # noqa: E402
from tests.fusehang import Control  # noqa: E402
from tests.server import children_of  # noqa: E402

# (chdir, clone) system call numbers: x86-64's own table, and the generic one (arm64, riscv64, ...).
SYSCALLS = {"x86_64": (80, 56)}.get(platform.machine(), (49, 220))


def children() -> list[int]:
    return children_of(os.getpid())


def syscall_of(pid: int, tid: int | None = None) -> list[str]:
    path = f"/proc/{pid}/task/{tid}/syscall" if tid else f"/proc/{pid}/syscall"
    try:
        return Path(path).read_text().split()
    except OSError:
        return []


def stuck_child(timeout: float) -> int | None:
    """The child once it waits in its chdir."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in children():
            fields = syscall_of(pid)
            if fields and fields[0] == str(SYSCALLS[0]):
                return pid
        time.sleep(0.02)
    return None


def guard_below(sp: int) -> bool:
    maps = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        start, end = (int(x, 16) for x in span.split("-"))
        maps.append((start, end, perms))
    for index, (start, end, _) in enumerate(maps):
        if start <= sp < end:
            return index > 0 and maps[index - 1][1] == start and maps[index - 1][2] == "---p"
    return False


def main() -> None:
    control = Control(Path(sys.argv[1]))
    control.wait_serving()
    cwd = control.mountpoint / "x"
    assert cwd.is_dir()
    control.set("pending")
    report: dict = {"hub_ran": False}
    watchdog_fired = threading.Event()

    def watchdog() -> None:
        # If the event loop is blocked in the clone, nothing below runs: end the child from here.
        if not report_ready.wait(10):
            watchdog_fired.set()
            for pid in children():
                os.kill(pid, signal.SIGKILL)

    report_ready = threading.Event()
    threading.Thread(target=watchdog, daemon=True).start()
    env = environment_block({"PATH": "/usr/bin:/bin"})
    starting = gevent.spawn(spawn, "/bin/true", ["true"], env, cwd=str(cwd))
    gevent.sleep(0.2)
    report["hub_ran"] = not watchdog_fired.is_set()
    child = stuck_child(timeout=5)
    report["stuck"] = child is not None
    if child is not None:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{child}/status").read_text().splitlines())
        report["sigblk"] = status["SigBlk"].strip()
        fields = syscall_of(child)
        report["stack_guard"] = guard_below(int(fields[7], 16))
        report["parent_in_clone"] = any(
            syscall_of(os.getpid(), int(tid))[:1] == [str(SYSCALLS[1])] for tid in os.listdir("/proc/self/task")
        )
        os.kill(child, signal.SIGKILL)
    report_ready.set()
    starting.join(timeout=10)
    control.set("release")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
